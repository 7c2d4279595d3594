// Small text helpers shared by every part: hexadecimal digits and
// percent-encoding (RFC 3986 section 2.1).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tameflare {

// 0..15 for a hexadecimal digit of either case, -1 for anything else.
constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes %XX escapes, and '+' as a space when `plus_is_space` (form
// encoding). nullopt on a malformed escape. A decoded NUL byte is kept:
// callers for which a name may not hold one check for it.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

}  // namespace tameflare
