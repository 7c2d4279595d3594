#include "policy/action.h"

namespace tameflare::policy {

std::string_view to_string(Risk risk) noexcept {
    switch (risk) {
        case Risk::low: return "low";
        case Risk::medium: return "medium";
        case Risk::high: return "high";
    }
    return "high";
}

std::string_view to_string(Access access) noexcept {
    return access == Access::read ? "read" : "write";
}

std::optional<Risk> parse_risk(std::string_view text) noexcept {
    if (text == "low") return Risk::low;
    if (text == "medium") return Risk::medium;
    if (text == "high") return Risk::high;
    return std::nullopt;
}

std::optional<Access> parse_access(std::string_view text) noexcept {
    if (text == "read") return Access::read;
    if (text == "write") return Access::write;
    return std::nullopt;
}

}  // namespace tameflare::policy
