// Small text helpers shared by every part: hexadecimal digits, names made
// of a set of characters, and percent-encoding (RFC 3986 section 2.1).
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

enum class Letters { lower, any_case };

// Whether `text` is a name of 1 to `max_size` characters, each an ASCII
// letter (lower case only, or either case), a digit, or one of `punctuation`.
// The parts add their own rules on top (what it may start with).
constexpr bool is_name(std::string_view text, std::size_t max_size, Letters letters,
                       std::string_view punctuation) noexcept {
    if (text.empty() || text.size() > max_size) return false;
    for (const char c : text) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                        (letters == Letters::any_case && c >= 'A' && c <= 'Z') ||
                        punctuation.find(c) != std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

// ASCII letters in lower case, every other byte as it is (HTTP field names,
// schemes and host names are case-insensitive ASCII).
std::string ascii_lower(std::string_view text);

// Decodes %XX escapes, and '+' as a space when `plus_is_space` (form
// encoding). nullopt on a malformed escape. A decoded NUL byte is kept:
// callers for which a name may not hold one check for it.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

// Each `name=value` of a query string or form body ("a=1&b=&c"), still
// encoded, in order; empty pairs are skipped, a pair without '=' has an
// empty value.
template <class Visit>
void for_each_form_pair(std::string_view text, Visit&& visit) {
    while (!text.empty()) {
        const auto amp = text.find('&');
        const std::string_view pair = text.substr(0, amp);
        text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
        if (pair.empty()) continue;
        const auto eq = pair.find('=');
        visit(pair.substr(0, eq), eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    }
}

// Any contiguous character range (Beast's and OpenSSL's string views) as a std::string_view.
template <class Text>
std::string_view as_view(const Text& text) {
    return {text.data(), text.size()};
}

}  // namespace tameflare
