// Small string helpers shared inside the policy library.
#pragma once

#include "common/text.h"

#include <string>
#include <string_view>
#include <vector>

namespace tameflare::policy {

char ascii_lower(char c) noexcept;
using tameflare::ascii_lower;  // of a string: common/text.h
std::string ascii_upper(std::string_view text);
bool iequals(std::string_view a, std::string_view b) noexcept;
// "/a/{b}/c" -> {"a", "{b}", "c"}; "/" -> {}.
std::vector<std::string> split_path_template(std::string_view path);
// Replaces every character outside [A-Za-z0-9_-] by '_' (so a value put into
// an action name cannot add segments or glob characters); "" becomes "_".
std::string action_safe(std::string_view value);

}  // namespace tameflare::policy
