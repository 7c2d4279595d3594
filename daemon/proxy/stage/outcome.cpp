#include "daemon/proxy/stage/outcome.h"

namespace tameflare::proxy::stage {

Outcome outcome_of(policy::Label label) noexcept {
    switch (label) {
        case policy::Label::allowed: return Outcome::allowed;
        case policy::Label::denied: return Outcome::denied;
        case policy::Label::would_deny: return Outcome::would_deny;
        case policy::Label::pending_approval: return Outcome::pending_approval;
        case policy::Label::would_require_approval: return Outcome::would_require_approval;
        case policy::Label::rate_limited: return Outcome::rate_limited;
        case policy::Label::would_rate_limit: return Outcome::would_rate_limit;
        case policy::Label::kill_switch: return Outcome::kill_switch;
    }
    return Outcome::denied;
}

std::string_view to_string(Outcome outcome) noexcept {
    switch (outcome) {
        case Outcome::approved: return "approved";
        case Outcome::approval_timeout: return "approval_timeout";
        case Outcome::error: return "error";
        case Outcome::allowed: return policy::to_string(policy::Label::allowed);
        case Outcome::denied: return policy::to_string(policy::Label::denied);
        case Outcome::would_deny: return policy::to_string(policy::Label::would_deny);
        case Outcome::pending_approval: return policy::to_string(policy::Label::pending_approval);
        case Outcome::would_require_approval: return policy::to_string(policy::Label::would_require_approval);
        case Outcome::rate_limited: return policy::to_string(policy::Label::rate_limited);
        case Outcome::would_rate_limit: return policy::to_string(policy::Label::would_rate_limit);
        case Outcome::kill_switch: return policy::to_string(policy::Label::kill_switch);
    }
    return "denied";
}

}  // namespace tameflare::proxy::stage
