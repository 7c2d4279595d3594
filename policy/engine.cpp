#include "policy/engine.h"

#include "policy/classify.h"

namespace tameflare::policy {

namespace {

void finish(const Gateway& gateway, Decision& decision) {
    const auto level = gateway.enforcement;
    switch (decision.effect) {
        case Effect::allow:
            decision.verdict = Verdict::forward;
            decision.label = Label::allowed;
            break;
        case Effect::require_approval:
            if (level == Enforcement::monitor) {
                decision.verdict = Verdict::forward;
                decision.label = Label::would_require_approval;
            } else {
                decision.verdict = Verdict::hold;
                decision.label = Label::pending_approval;
                decision.approval_timeout = gateway.approval_timeout;
            }
            break;
        case Effect::deny:
            if (level == Enforcement::full) {
                decision.verdict = Verdict::deny;
                decision.label = Label::denied;
            } else {
                decision.verdict = Verdict::forward;
                decision.label = Label::would_deny;
            }
            break;
    }
    decision.trace.push_back({"enforcement", std::string(to_string(level)) + ": " +
                                                 std::string(to_string(decision.effect)) + " -> " +
                                                 std::string(to_string(decision.label))});
}

}  // namespace

bool KillSwitch::covers(std::string_view gateway, std::string_view connector, std::string_view provider) const {
    return all || gateways.contains(gateway) || (!connector.empty() && connectors.contains(connector)) ||
           (!provider.empty() && connectors.contains(provider));
}

std::string_view to_string(Verdict verdict) noexcept {
    switch (verdict) {
        case Verdict::forward: return "forward";
        case Verdict::deny: return "deny";
        case Verdict::hold: return "hold";
        case Verdict::rate_limited: return "rate_limited";
    }
    return "deny";
}

std::string_view to_string(Label label) noexcept {
    switch (label) {
        case Label::allowed: return "allowed";
        case Label::denied: return "denied";
        case Label::would_deny: return "would_deny";
        case Label::pending_approval: return "pending_approval";
        case Label::would_require_approval: return "would_require_approval";
        case Label::rate_limited: return "rate_limited";
        case Label::would_rate_limit: return "would_rate_limit";
        case Label::kill_switch: return "kill_switch";
    }
    return "denied";
}

Decision decide(const Gateway& gateway, const ConnectorInstance* connector, std::span<const Action> actions,
                const EvalContext& context) {
    Decision decision;
    const std::string_view connector_name = connector ? std::string_view(connector->name) : std::string_view();
    const std::string_view provider = connector ? std::string_view(connector->def->name) : std::string_view();

    if (context.limiter && gateway.rate_limit.requests > 0) {
        std::string key = gateway.name;
        key += '/';
        key += context.agent;
        const auto result = context.limiter->acquire(key, gateway.rate_limit, context.now);
        const std::string window = std::to_string(gateway.rate_limit.requests) + " per " +
                                   std::to_string(gateway.rate_limit.window.count()) + " s";
        if (!result.allowed) {
            decision.reason = "rate limit of " + window + " for agent " + std::string(context.agent) + " reached";
            decision.trace.push_back({"rate_limit", decision.reason});
            decision.retry_after = result.retry_after;
            if (gateway.enforcement == Enforcement::monitor) {
                decision.verdict = Verdict::forward;
                decision.label = Label::would_rate_limit;
            } else {
                decision.verdict = Verdict::rate_limited;
                decision.label = Label::rate_limited;
            }
            return decision;
        }
        decision.trace.push_back({"rate_limit", std::to_string(result.used) + " of " + window});
    }

    if (context.kill_switch && context.kill_switch->covers(gateway.name, connector_name, provider)) {
        decision.verdict = Verdict::deny;
        decision.label = Label::kill_switch;
        decision.kill_switch = true;
        decision.reason = "kill switch active";
        decision.trace.push_back({"kill_switch", "active for this request's scope (enforced at every level)"});
        return decision;
    }

    if (!connector || actions.empty()) {
        decision.effect = Effect::deny;
        decision.reason = "no connector of gateway " + gateway.name + " serves this host";
        decision.trace.push_back({"connector", decision.reason + ": default deny"});
        finish(gateway, decision);
        return decision;
    }

    const ConditionFacts facts{gateway.name, context.agent};
    std::vector<const ConditionPolicy*> policies;
    decision.effect = Effect::allow;
    bool first = true;
    for (std::size_t i = 0; i < actions.size(); ++i) {
        const Action& action = actions[i];
        const Resolution resolution = gateway.resolve(*connector, action);
        Effect effect = resolution.effect;
        std::string reason = resolution.tier == Resolution::Tier::default_deny
                                 ? "no rule allows " + action.type + " (default deny)"
                                 : std::string(to_string(effect)) + " by " + resolution.rule;
        decision.trace.push_back({"permission", action.type + ": " + resolution.rule});
        if (effect != Effect::deny) {
            policies.clear();
            gateway.policies_for(*connector, action, policies);
            for (const ConditionPolicy* policy : policies) {
                const Truth truth = policy->when.evaluate(action, facts);
                if (truth == Truth::no) continue;
                const Effect policy_effect = truth == Truth::error ? Effect::deny : policy->effect;
                const std::string because = policy->when.explain(action, facts);
                decision.trace.push_back(
                    {"policy", policy->name + ": " + because + " -> " + std::string(to_string(policy_effect)) +
                                   (truth == Truth::error ? " (undecidable condition fails closed)" : "")});
                if (policy_effect > effect) {
                    effect = policy_effect;
                    reason = truth == Truth::error    ? "policy " + policy->name + " cannot be decided: " + because
                             : policy->reason.empty() ? "policy " + policy->name + ": " + because
                                                      : policy->reason;
                }
                if (effect == Effect::deny) break;
            }
        }
        if (first || effect > decision.effect) {
            decision.effect = effect;
            decision.reason = std::move(reason);
            decision.deciding_action = i;
            first = false;
        }
    }
    finish(gateway, decision);
    return decision;
}

namespace {

struct BodyAsker {
    const Gateway* gateway;
    const ConnectorInstance* connector;

    static bool ask(const void* self, std::string_view type, std::span<const std::string> path_parameters) {
        const auto* asker = static_cast<const BodyAsker*>(self);
        return asker->gateway->reads_body_fields(*asker->connector, type, path_parameters);
    }
};

}  // namespace

Evaluation evaluate(const Gateway& gateway, const Request& request, const EvalContext& context) {
    Evaluation evaluation;
    evaluation.connector = gateway.connector_for_host(request.host);
    if (evaluation.connector) {
        const BodyAsker asker{&gateway, evaluation.connector};
        ClassifyOptions options{evaluation.connector->name, evaluation.connector->base_segments};
        if (!context.all_parameters) {
            options.wants_body = &BodyAsker::ask;
            options.wants_body_context = &asker;
        }
        evaluation.actions = classify(*evaluation.connector->def, options, request);
    }
    evaluation.decision = decide(gateway, evaluation.connector, evaluation.actions, context);
    return evaluation;
}

}  // namespace tameflare::policy
