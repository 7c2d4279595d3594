#include "policy/internal/text.h"

#include <algorithm>

namespace tameflare::policy {

char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

namespace {
char lower(char c) noexcept {
    return ascii_lower(c);
}
char upper(char c) noexcept {
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}
}  // namespace

std::string ascii_upper(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), upper);
    return out;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::vector<std::string> split_path_template(std::string_view path) {
    std::vector<std::string> out;
    std::size_t pos = 1;
    while (pos <= path.size()) {
        const auto slash = path.find('/', pos);
        const auto end = slash == std::string_view::npos ? path.size() : slash;
        if (end > pos) out.emplace_back(path.substr(pos, end - pos));
        pos = end + 1;
    }
    return out;
}

std::string action_safe(std::string_view value) {
    if (value.empty()) return "_";
    std::string out(value);
    for (char& c : out) {
        const bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok) c = '_';
    }
    return out;
}

}  // namespace tameflare::policy
