#include "policy/glob.h"

namespace tameflare::policy {

bool glob_match(std::string_view pattern, std::string_view text) noexcept {
    // Greedy matching with one backtrack point: O(pattern * text) at worst.
    std::size_t p = 0;
    std::size_t t = 0;
    std::size_t star = std::string_view::npos;
    std::size_t star_text = 0;
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
            ++p;
            ++t;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_text = t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++star_text;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

bool has_glob_chars(std::string_view pattern) noexcept {
    return pattern.find_first_of("*?") != std::string_view::npos;
}

}  // namespace tameflare::policy
