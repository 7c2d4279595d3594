// The decision: rate limit, kill switch, permissions, condition policies,
// then the gateway's enforcement level - in that order, as the reference
// gateway does. Returns what to do and a trace of why.
#pragma once

#include "policy/action.h"
#include "policy/gateway.h"
#include "policy/rate_limiter.h"

#include <chrono>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace tameflare::policy {

// Operator-set emergency stops. Scopes: everything, a gateway, a connector
// (by instance or definition name, in every gateway).
struct KillSwitch {
    bool all = false;
    std::set<std::string, std::less<>> gateways;
    std::set<std::string, std::less<>> connectors;
    [[nodiscard]] bool covers(std::string_view gateway, std::string_view connector, std::string_view provider) const;
};

struct EvalContext {
    std::string_view agent;  // the agent id from the kernel, never from the request
    RateLimiter::Clock::time_point now{};
    const KillSwitch* kill_switch = nullptr;  // null: none active
    RateLimiter* limiter = nullptr;           // null: no rate limiting
    // Read every parameter, even body fields no policy looks at (for showing
    // them, as `tf policy test` does). The proxy leaves this off.
    bool all_parameters = false;
};

// What the proxy does with the request.
enum class Verdict { forward, deny, hold, rate_limited };

// The X-TameFlare-Decision value and the log's decision field.
enum class Label {
    allowed,
    denied,
    would_deny,
    pending_approval,
    would_require_approval,
    rate_limited,
    would_rate_limit,
    kill_switch,
};

std::string_view to_string(Verdict verdict) noexcept;
std::string_view to_string(Label label) noexcept;

struct TraceStep {
    std::string stage;  // rate_limit, kill_switch, connector, permission, policy, enforcement
    std::string detail;
};

struct Decision {
    Verdict verdict = Verdict::deny;
    Label label = Label::denied;
    Effect effect = Effect::deny;  // what policy said, before the enforcement level
    std::string reason;
    std::vector<TraceStep> trace;
    std::size_t deciding_action = 0;  // index into the actions
    std::chrono::seconds retry_after{0};
    std::chrono::seconds approval_timeout{0};
    bool kill_switch = false;
};

struct Evaluation {
    const ConnectorInstance* connector = nullptr;  // null: no connector serves the host
    std::vector<Action> actions;
    Decision decision;
};

// Classifies the request on the gateway and decides it.
Evaluation evaluate(const Gateway& gateway, const Request& request, const EvalContext& context);

// Decides already classified actions (all of one request).
Decision decide(const Gateway& gateway, const ConnectorInstance* connector, std::span<const Action> actions,
                const EvalContext& context);

}  // namespace tameflare::policy
