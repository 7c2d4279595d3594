// What became of a request or tunnel, as one value: the policy's label when
// the decision stood, or what happened after it (a human's answer, no answer
// in time, an error on the way upstream). Its spelling is the
// X-TameFlare-Decision header and the traffic record's `decision`, which the
// store, the metrics and `tf logs` read; to_string() is the only place that
// spelling is written. Table-tested in tests/daemon/proxy/stage/outcome_test.cpp.
#pragma once

#include "policy/engine.h"

#include <string_view>

namespace tameflare::proxy::stage {

enum class Outcome {
    // The policy's labels (policy::Label), in its order.
    allowed,
    denied,
    would_deny,
    pending_approval,
    would_require_approval,
    rate_limited,
    would_rate_limit,
    kill_switch,
    // After the decision.
    approved,          // held, and a human approved it
    approval_timeout,  // held, and nobody answered in time
    error,             // decided, but not carried out: the upstream, the vault or the log failed
};

Outcome outcome_of(policy::Label label) noexcept;
std::string_view to_string(Outcome outcome) noexcept;

}  // namespace tameflare::proxy::stage
