// The decision pipeline: rate limit, kill switch, permissions by specificity,
// condition policies, enforcement level - in that order, with a trace.
#include "policy/engine.h"
#include "test_support.h"

#include <gtest/gtest.h>

namespace tameflare::policy {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const Config> gateway_config(const std::string& connectors, const std::string& extra = "") {
    return testing::load_or_fail({R"({"name": "g", "connectors": )" + connectors + extra + "}"});
}

struct Outcome {
    Evaluation evaluation;
    const Decision& decision() const { return evaluation.decision; }
    std::string action() const {
        return evaluation.actions.empty() ? "" : evaluation.actions.at(evaluation.decision.deciding_action).type;
    }
};

Outcome decide_request(const Config& config, const Request& request, const EvalContext& context = {}) {
    EXPECT_NE(config.gateway("g"), nullptr);
    return Outcome{evaluate(*config.gateway("g"), request, context)};
}

const Request kMerge{"PUT", "api.github.com", "/repos/o/r/pulls/7/merge"};
const Request kPrGet{"GET", "api.github.com", "/repos/o/r/pulls/7"};
const Request kPrCreate{"POST", "api.github.com", "/repos/o/r/pulls", "application/json", R"({"base":"main"})"};
const Request kBranchDelete{"DELETE", "api.github.com", "/repos/o/r/git/refs/heads/x"};

TEST(Permissions, ExactRuleBeatsWildcardWhichBeatsConnectorWide) {
    const auto config = gateway_config(R"({"github": {"rules": [
        {"action": "*", "decision": "deny"},
        {"action": "github.pr.*", "decision": "require_approval"},
        {"action": "github.pr.merge", "decision": "allow"}]}})");
    ASSERT_TRUE(config);
    const auto merge = decide_request(*config, kMerge);
    EXPECT_EQ(merge.decision().effect, Effect::allow);
    EXPECT_NE(merge.decision().reason.find("rules[2]"), std::string::npos) << merge.decision().reason;
    EXPECT_EQ(decide_request(*config, kPrGet).decision().effect, Effect::require_approval);
    EXPECT_EQ(decide_request(*config, kBranchDelete).decision().effect, Effect::deny);
}

TEST(Permissions, NoMatchingRuleIsDefaultDeny) {
    const auto config = gateway_config(R"({"github": {"rules": [{"action": "github.pr.get", "decision": "allow"}]}})");
    ASSERT_TRUE(config);
    const auto outcome = decide_request(*config, kMerge);
    EXPECT_EQ(outcome.decision().verdict, Verdict::deny);
    EXPECT_EQ(outcome.decision().label, Label::denied);
    EXPECT_NE(outcome.decision().reason.find("default deny"), std::string::npos);
}

TEST(Permissions, DenyWinsAmongRulesOfTheSameSpecificity) {
    const auto config = gateway_config(R"({"github": {"rules": [
        {"action": "github.pr.*", "decision": "allow"},
        {"action": "github.*.merge", "decision": "deny"},
        {"action": "github.p?.merge", "decision": "require_approval"},
        {"action": "github.pr.get", "decision": "allow"},
        {"action": "github.pr.get", "decision": "require_approval"}]}})");
    ASSERT_TRUE(config);
    EXPECT_EQ(decide_request(*config, kMerge).decision().effect, Effect::deny);
    EXPECT_EQ(decide_request(*config, kPrGet).decision().effect, Effect::require_approval);
    EXPECT_EQ(decide_request(*config, kPrCreate).decision().effect, Effect::allow);
}

TEST(Permissions, ProviderStarIsConnectorWide) {
    const auto config = gateway_config(R"({"github": {"rules": [
        {"action": "github.*", "decision": "allow"},
        {"action": "github.pr.m*", "decision": "deny"}]}})");
    ASSERT_TRUE(config);
    EXPECT_EQ(decide_request(*config, kMerge).decision().effect, Effect::deny);  // wildcard beats connector-wide
    EXPECT_EQ(decide_request(*config, kPrGet).decision().effect, Effect::allow);
}

TEST(Presets, AllowAllReadOnlyAndRequireApproval) {
    const auto config = testing::load_or_fail({
        R"({"name": "all", "connectors": {"github": {"preset": "allow_all"}}})",
        R"({"name": "ro", "connectors": {"github": {"preset": "read_only"}}})",
        R"({"name": "ask", "connectors": {"github": {"preset": "require_approval"}}})",
        R"({"name": "custom", "connectors": {"github": {"preset": "custom"}}})",
    });
    ASSERT_TRUE(config);
    const auto effect = [&](const char* gateway, const Request& request) {
        return evaluate(*config->gateway(gateway), request, {}).decision.effect;
    };
    EXPECT_EQ(effect("all", kMerge), Effect::allow);
    EXPECT_EQ(effect("ro", kPrGet), Effect::allow);
    EXPECT_EQ(effect("ro", kMerge), Effect::deny);
    EXPECT_EQ(effect("ro", {"POST", "github.com", "/o/r.git/git-upload-pack"}), Effect::allow);  // a fetch reads
    EXPECT_EQ(effect("ro", {"GET", "api.github.com", "/nothing/known/here/at/all/x"}),
              Effect::deny);  // unknown is a write
    EXPECT_EQ(effect("ask", kPrGet), Effect::require_approval);
    EXPECT_EQ(effect("custom", kPrGet), Effect::deny);
}

TEST(Presets, RulesRefineAPreset) {
    const auto config = gateway_config(R"({"github": {"preset": "read_only", "rules": [
        {"action": "github.pr.merge", "decision": "require_approval"},
        {"action": "github.pr.get", "decision": "deny"}]}})");
    ASSERT_TRUE(config);
    EXPECT_EQ(decide_request(*config, kMerge).decision().effect, Effect::require_approval);
    EXPECT_EQ(decide_request(*config, kPrGet).decision().effect, Effect::deny);
    EXPECT_EQ(decide_request(*config, {"GET", "api.github.com", "/repos/o/r"}).decision().effect, Effect::allow);
}

TEST(Connectors, AHostNoConnectorServesIsDenied) {
    const auto config = gateway_config(R"({"github": {"preset": "allow_all"}})");
    ASSERT_TRUE(config);
    const auto outcome = decide_request(*config, {"GET", "example.org", "/"});
    EXPECT_EQ(outcome.evaluation.connector, nullptr);
    EXPECT_TRUE(outcome.evaluation.actions.empty());
    EXPECT_EQ(outcome.decision().verdict, Verdict::deny);
    EXPECT_NE(outcome.decision().reason.find("no connector"), std::string::npos);
}

TEST(Connectors, HostLookupIgnoresCaseAndATrailingDotAndHonoursWildcards) {
    const auto config = gateway_config(R"({"github": {"preset": "allow_all"},
        "internal": {"connector": "http", "domains": ["*.corp.example.com", "*.eu.corp.example.com"], "preset": "allow_all"},
        "hooks": {"connector": "webhook", "domains": ["hooks.corp.example.com"], "preset": "allow_all"}})");
    ASSERT_TRUE(config);
    const Gateway& gateway = *config->gateway("g");
    ASSERT_NE(gateway.connector_for_host("API.GitHub.com."), nullptr);
    EXPECT_EQ(gateway.connector_for_host("API.GitHub.com.")->name, "github");
    EXPECT_EQ(gateway.connector_for_host("wiki.corp.example.com")->name, "internal");
    EXPECT_EQ(gateway.connector_for_host("hooks.corp.example.com")->name, "hooks");  // exact beats wildcard
    EXPECT_EQ(gateway.connector_for_host("corp.example.com"), nullptr);              // apex is not a sub-domain
    EXPECT_EQ(gateway.connector_for_host("evilcorp.example.com"), nullptr);
}

TEST(ConditionPolicies, TightenAnAllowedActionWhenTheyHold) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"stripe": {"preset": "allow_all"}},
        "policies": [{"name": "big", "actions": ["stripe.transfer.create"],
                      "when": {"field": "parameters.amount", "op": "gt", "value": 10000},
                      "decision": "require_approval", "reason": "over 100.00"}]})"});
    ASSERT_TRUE(config);
    const auto transfer = [&](const std::string& body) {
        return evaluate(*config->gateway("g"),
                        {"POST", "api.stripe.com", "/v1/transfers", "application/x-www-form-urlencoded", body}, {})
            .decision;
    };
    EXPECT_EQ(transfer("amount=500&currency=usd").effect, Effect::allow);
    const Decision big = transfer("amount=20000&currency=usd");
    EXPECT_EQ(big.effect, Effect::require_approval);
    EXPECT_EQ(big.verdict, Verdict::hold);
    EXPECT_EQ(big.reason, "over 100.00");
    EXPECT_EQ(big.approval_timeout, 300s);
    ASSERT_GE(big.trace.size(), 2U);
    EXPECT_TRUE(std::any_of(big.trace.begin(), big.trace.end(), [](const TraceStep& s) {
        return s.stage == "policy" && s.detail.find("parameters.amount gt 10000") != std::string::npos;
    }));
}

TEST(ConditionPolicies, AnUndecidableConditionDenies) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"stripe": {"preset": "allow_all"}},
        "policies": [{"name": "big", "actions": ["stripe.transfer.*"],
                      "when": {"field": "parameters.amount", "op": "gt", "value": 10000},
                      "decision": "require_approval"}]})"});
    ASSERT_TRUE(config);
    // " 20000" is not a number the policy can compare; the upstream might read it as one.
    const Decision decision =
        evaluate(*config->gateway("g"),
                 {"POST", "api.stripe.com", "/v1/transfers", "application/x-www-form-urlencoded", "amount=%2020000"},
                 {})
            .decision;
    EXPECT_EQ(decision.effect, Effect::deny);
    EXPECT_NE(decision.reason.find("cannot be decided"), std::string::npos) << decision.reason;
}

TEST(ConditionPolicies, DenyWinsAcrossPolicies) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"github": {"preset": "allow_all"}},
        "policies": [
          {"name": "ask-main", "actions": ["github.pr.*"], "when": {"field": "parameters.base", "op": "equals", "value": "main"}, "decision": "require_approval"},
          {"name": "no-o", "actions": ["github.*"], "when": {"field": "parameters.owner", "op": "equals", "value": "o"}, "decision": "deny", "reason": "owner o is frozen"},
          {"name": "ask-all", "when": {"field": "method", "op": "equals", "value": "POST"}, "decision": "require_approval"}]})"});
    ASSERT_TRUE(config);
    const Decision decision = evaluate(*config->gateway("g"), kPrCreate, {}).decision;
    EXPECT_EQ(decision.effect, Effect::deny);
    EXPECT_EQ(decision.reason, "owner o is frozen");
    const Decision other =
        evaluate(*config->gateway("g"),
                 {"POST", "api.github.com", "/repos/x/r/pulls", "application/json", R"({"base":"dev"})"}, {})
            .decision;
    EXPECT_EQ(other.effect, Effect::require_approval);  // ask-all still holds
}

TEST(ConditionPolicies, DoNotLoosenADeny) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"github": {"rules": [{"action": "github.pr.get", "decision": "allow"}]}},
        "policies": [{"name": "p", "when": {"field": "method", "op": "equals", "value": "PUT"}, "decision": "require_approval"}]})"});
    ASSERT_TRUE(config);
    EXPECT_EQ(evaluate(*config->gateway("g"), kMerge, {}).decision.effect, Effect::deny);
}

TEST(ConditionPolicies, ApplyToDynamicActions) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"mcp": {"domains": ["mcp.example.com"], "rules": [{"action": "mcp.tools.*", "decision": "allow"}]}},
        "policies": [{"name": "no-drop", "actions": ["mcp.tools.drop_*"], "when": {"field": "agent", "op": "glob", "value": "*"}, "decision": "deny"}]})"});
    ASSERT_TRUE(config);
    const auto call = [&](const std::string& tool) {
        const std::string body =
            R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":")" + tool + R"("}})";
        return evaluate(*config->gateway("g"), {"POST", "mcp.example.com", "/mcp", "application/json", body}, {})
            .decision.effect;
    };
    EXPECT_EQ(call("search"), Effect::allow);
    EXPECT_EQ(call("drop_table"), Effect::deny);
}

TEST(JsonRpcBatches, TheStrictestCallDecidesTheBatch) {
    const auto config = gateway_config(R"({"mcp": {"domains": ["mcp.example.com"], "rules": [
        {"action": "mcp.tools.list", "decision": "allow"},
        {"action": "mcp.tools.deploy", "decision": "require_approval"}]}})");
    ASSERT_TRUE(config);
    const auto batch = [&](const std::string& body) {
        return decide_request(*config, {"POST", "mcp.example.com", "/mcp", "application/json", body});
    };
    const auto held =
        batch(R"([{"method":"tools/list","id":1},{"method":"tools/call","id":2,"params":{"name":"deploy"}}])");
    EXPECT_EQ(held.decision().effect, Effect::require_approval);
    EXPECT_EQ(held.action(), "mcp.tools.deploy");
    const auto denied = batch(
        R"([{"method":"tools/call","id":2,"params":{"name":"deploy"}},{"method":"tools/call","id":3,"params":{"name":"rm"}},{"method":"tools/list","id":1}])");
    EXPECT_EQ(denied.decision().effect, Effect::deny);
    EXPECT_EQ(denied.action(), "mcp.tools.rm");
}

TEST(Enforcement, MonitorForwardsEverythingAndLabelsWhatWouldHaveHappened) {
    const auto config =
        gateway_config(R"({"github": {"rules": [{"action": "github.pr.merge", "decision": "require_approval"}]}})",
                       R"(, "enforcement": "monitor")");
    ASSERT_TRUE(config);
    const auto merge = decide_request(*config, kMerge);
    EXPECT_EQ(merge.decision().verdict, Verdict::forward);
    EXPECT_EQ(merge.decision().label, Label::would_require_approval);
    const auto other = decide_request(*config, kPrGet);
    EXPECT_EQ(other.decision().verdict, Verdict::forward);
    EXPECT_EQ(other.decision().label, Label::would_deny);
    EXPECT_EQ(other.decision().effect, Effect::deny);
}

TEST(Enforcement, SoftForwardsDeniesButHoldsApprovals) {
    const auto config =
        gateway_config(R"({"github": {"rules": [{"action": "github.pr.merge", "decision": "require_approval"}]}})",
                       R"(, "enforcement": "soft", "approval_timeout_seconds": 42)");
    ASSERT_TRUE(config);
    const auto merge = decide_request(*config, kMerge);
    EXPECT_EQ(merge.decision().verdict, Verdict::hold);
    EXPECT_EQ(merge.decision().label, Label::pending_approval);
    EXPECT_EQ(merge.decision().approval_timeout, 42s);
    const auto other = decide_request(*config, kPrGet);
    EXPECT_EQ(other.decision().verdict, Verdict::forward);
    EXPECT_EQ(other.decision().label, Label::would_deny);
}

TEST(Enforcement, FullIsTheDefault) {
    const auto config = gateway_config(R"({"github": {}})");
    ASSERT_TRUE(config);
    EXPECT_EQ(config->gateway("g")->enforcement, Enforcement::full);
    EXPECT_EQ(decide_request(*config, kPrGet).decision().verdict, Verdict::deny);
}

TEST(RateLimit, IsCheckedFirstAndAnswersWithRetryAfter) {
    const auto config = gateway_config(R"({"github": {"preset": "allow_all"}})",
                                       R"(, "rate_limit": {"requests": 2, "window_seconds": 10})");
    ASSERT_TRUE(config);
    RateLimiter limiter;
    KillSwitch kill;
    kill.all = true;  // the rate limit is checked before the kill switch
    const auto t0 = RateLimiter::Clock::time_point{} + 1000s;
    EvalContext context{"agent-1", t0, nullptr, &limiter};
    EXPECT_EQ(decide_request(*config, kPrGet, context).decision().verdict, Verdict::forward);
    context.now = t0 + 3s;
    EXPECT_EQ(decide_request(*config, kPrGet, context).decision().verdict, Verdict::forward);
    context.now = t0 + 4s;
    context.kill_switch = &kill;
    const auto limited = decide_request(*config, kPrGet, context);
    EXPECT_EQ(limited.decision().verdict, Verdict::rate_limited);
    EXPECT_EQ(limited.decision().label, Label::rate_limited);
    EXPECT_EQ(limited.decision().retry_after, 6s);
    // Another agent of the same gateway has its own window.
    context.agent = "agent-2";
    EXPECT_EQ(decide_request(*config, kPrGet, context).decision().label, Label::kill_switch);
}

TEST(RateLimit, MonitorModeOnlyLabelsIt) {
    const auto config =
        gateway_config(R"({"github": {"preset": "allow_all"}})",
                       R"(, "enforcement": "monitor", "rate_limit": {"requests": 1, "window_seconds": 60})");
    ASSERT_TRUE(config);
    RateLimiter limiter;
    EvalContext context{"a", RateLimiter::Clock::time_point{} + 100s, nullptr, &limiter};
    decide_request(*config, kPrGet, context);
    const auto second = decide_request(*config, kPrGet, context);
    EXPECT_EQ(second.decision().verdict, Verdict::forward);
    EXPECT_EQ(second.decision().label, Label::would_rate_limit);
}

TEST(KillSwitch, CoversAllAGatewayOrAConnectorAtEveryEnforcementLevel) {
    const auto config = testing::load_or_fail(
        {R"({"name": "g", "enforcement": "monitor", "connectors": {"github": {"preset": "allow_all"}, "openai": {"preset": "allow_all"}}})"});
    ASSERT_TRUE(config);
    const Gateway& gateway = *config->gateway("g");
    const Request chat{"POST", "api.openai.com", "/v1/chat/completions", "application/json", "{}"};
    const auto label = [&](const KillSwitch& kill, const Request& request) {
        return evaluate(gateway, request, EvalContext{"a", {}, &kill, nullptr}).decision.label;
    };
    KillSwitch none;
    EXPECT_EQ(label(none, kPrGet), Label::allowed);
    KillSwitch all;
    all.all = true;
    EXPECT_EQ(label(all, kPrGet), Label::kill_switch);
    KillSwitch by_gateway;
    by_gateway.gateways.insert("g");
    EXPECT_EQ(label(by_gateway, chat), Label::kill_switch);
    KillSwitch other_gateway;
    other_gateway.gateways.insert("h");
    EXPECT_EQ(label(other_gateway, chat), Label::allowed);
    KillSwitch by_connector;
    by_connector.connectors.insert("openai");
    EXPECT_EQ(label(by_connector, chat), Label::kill_switch);
    EXPECT_EQ(label(by_connector, kPrGet), Label::allowed);
    const Decision decision = evaluate(gateway, chat, EvalContext{"a", {}, &by_connector, nullptr}).decision;
    EXPECT_EQ(decision.verdict, Verdict::deny);
    EXPECT_TRUE(decision.kill_switch);
}

TEST(Trace, NamesEveryStageThatRan) {
    const auto config =
        gateway_config(R"({"github": {"rules": [{"action": "github.pr.merge", "decision": "allow"}]}})");
    ASSERT_TRUE(config);
    RateLimiter limiter;
    const auto outcome = decide_request(*config, kMerge, EvalContext{"a", {}, nullptr, &limiter});
    std::vector<std::string> stages;
    for (const auto& step : outcome.decision().trace) stages.push_back(step.stage);
    EXPECT_EQ(stages, (std::vector<std::string>{"rate_limit", "permission", "enforcement"}));
    EXPECT_EQ(outcome.decision().trace[1].detail,
              "github.pr.merge: connectors.github.rules[0] github.pr.merge -> allow");
}

TEST(ConditionPolicies, ExplainBytesThatAreNotUtf8WithoutThrowing) {
    // Found by request_fuzz: form values are raw bytes, and nlohmann's dump()
    // throws on invalid UTF-8.
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"slack": {"preset": "allow_all"}},
        "policies": [{"name": "p", "when": {"field": "parameters.text", "op": "contains", "value": "a"}, "decision": "deny"}]})"});
    ASSERT_TRUE(config);
    const Request request{"POST", "slack.com", "/api/chat.postMessage", "application/x-www-form-urlencoded",
                          "channel=C1&text=a%FF%FE"};
    const Decision decision = evaluate(*config->gateway("g"), request, {}).decision;
    EXPECT_EQ(decision.effect, Effect::deny);
    EXPECT_NE(decision.trace.at(1).detail.find("\xEF\xBF\xBD"), std::string::npos) << decision.trace.at(1).detail;
}

TEST(BodyParsing, IsSkippedWhenNoPolicyOrVariantReadsIt) {
    const auto config = testing::load_or_fail({R"({"name": "g",
        "connectors": {"github": {"preset": "allow_all"}},
        "policies": [{"name": "p", "actions": ["github.issue.*"], "when": {"field": "parameters.title", "op": "equals", "value": "x"}, "decision": "deny"}]})"});
    ASSERT_TRUE(config);
    const Gateway& gateway = *config->gateway("g");
    const Request pr{"POST", "api.github.com", "/repos/o/r/pulls", "application/json", R"({"title":"x"})"};
    const auto skipped = evaluate(gateway, pr, {});
    EXPECT_FALSE(skipped.actions.at(0).parameters.contains("title"));
    EXPECT_FALSE(skipped.actions.at(0).parameters_complete);
    EvalContext all;
    all.all_parameters = true;
    EXPECT_EQ(evaluate(gateway, pr, all).actions.at(0).parameters.value("title", ""), "x");
    // A policy on the action: the body is read and the policy applies.
    const Request issue{"POST", "api.github.com", "/repos/o/r/issues", "application/json", R"({"title":"x"})"};
    const auto read = evaluate(gateway, issue, {});
    EXPECT_TRUE(read.actions.at(0).parameters_complete);
    EXPECT_EQ(read.decision.effect, Effect::deny);
    // A policy that reads only path parameters does not need the body either.
    const auto by_path = testing::load_or_fail({R"({"name": "g",
        "connectors": {"github": {"preset": "allow_all"}},
        "policies": [{"name": "p", "actions": ["github.pr.*"], "when": {"field": "parameters.repo", "op": "equals", "value": "r"}, "decision": "require_approval"}]})"});
    ASSERT_TRUE(by_path);
    const auto path_only = evaluate(*by_path->gateway("g"), pr, {});
    EXPECT_FALSE(path_only.actions.at(0).parameters.contains("title"));
    EXPECT_EQ(path_only.decision.effect, Effect::require_approval);
    // A route with variants always reads the body.
    const Request close{"PATCH", "api.github.com", "/repos/o/r/pulls/7", "application/json", R"({"state":"closed"})"};
    EXPECT_EQ(evaluate(gateway, close, {}).actions.at(0).type, "github.pr.close");
}

TEST(Labels, HaveTheirWireNames) {
    EXPECT_EQ(to_string(Label::allowed), "allowed");
    EXPECT_EQ(to_string(Label::would_deny), "would_deny");
    EXPECT_EQ(to_string(Label::rate_limited), "rate_limited");
    EXPECT_EQ(to_string(Label::pending_approval), "pending_approval");
    EXPECT_EQ(to_string(Label::kill_switch), "kill_switch");
}

}  // namespace
}  // namespace tameflare::policy
