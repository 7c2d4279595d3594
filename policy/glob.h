// Glob patterns over action names: '*' matches any run of characters
// (dots included), '?' one character. Linear in practice, never exponential.
#pragma once

#include <string_view>

namespace tameflare::policy {

bool glob_match(std::string_view pattern, std::string_view text) noexcept;
bool has_glob_chars(std::string_view pattern) noexcept;

}  // namespace tameflare::policy
