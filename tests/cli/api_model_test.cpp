// The contract between tameflared's REST answers and tf's reading of them:
// values of the daemon's own types (daemon/control/model.h, the store's rows,
// the policy library's explanation) are written by the daemon's one writer of
// each (control::to_json, the store's JSON Lines writers, the live events),
// sent through JSON text as the socket carries them, read back by tf
// (cli/api_model.h), and every field must have survived. A member renamed on
// one side only fails here, not in front of a user. Then documents of the
// wrong shape: tf reads them as empty views and never throws.
#include "cli/api_model.h"

#include "daemon/control/events.h"
#include "daemon/control/metrics.h"
#include "daemon/control/model.h"
#include "daemon/proxy/approvals.h"
#include "daemon/store/query.h"
#include "policy/engine.h"
#include "policy/explain.h"
#include "tests/policy/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::cli {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// What the socket carries: the document as text, parsed again (as tf does,
// where a count is an unsigned number).
json wire(const json& document) {
    return json::parse(document.dump());
}

// A time the writers spell exactly (RFC 3339 to the microsecond).
std::chrono::system_clock::time_point at(std::chrono::microseconds since_2026) {
    return std::chrono::sys_days{std::chrono::year{2026} / 11 / 26} + since_2026;
}

// A gateway with something in every field the answers carry.
constexpr const char* kGateway = R"({
  "name": "contract", "description": "every field the answers carry", "enforcement": "soft",
  "rate_limit": {"requests": 30, "window_seconds": 120}, "approval_timeout_seconds": 90,
  "launch": {"users": ["nobody"], "groups": ["users", "staff"]},
  "connectors": {
    "github": {"credential": "github-token", "preset": "read_only",
               "rules": [{"action": "github.pr.create", "decision": "allow"},
                         {"action": "github.pr.merge", "decision": "require_approval"}]},
    "plain": {"connector": "http", "domains": ["plain.test", "www.plain.test"], "preset": "allow_all"}
  },
  "policies": [{"name": "people-merge-infra", "actions": ["github.pr.merge", "github.branch.delete"],
                "when": {"field": "parameters.repo", "op": "matches", "value": "^infra"},
                "decision": "deny", "reason": "infra is merged by people"}],
  "tcp": [{"host": "db.internal", "port": 5432}, {"cidr": "192.0.2.0/24", "port": 22}]
})";

std::shared_ptr<const policy::Config> contract_config() {
    return policy::testing::load_or_fail({kGateway});
}

policy::ConfigErrors some_errors() {
    return {{"gateways.d/a.json", "/connectors/github/preset", 3, 14, "unknown preset \"read\"", "read_only"},
            {"tameflared.json", "", 0, 0, "not JSON", ""}};
}

void expect_errors(const std::vector<ConfigErrorView>& read, const policy::ConfigErrors& written) {
    ASSERT_EQ(read.size(), written.size());
    for (std::size_t i = 0; i < read.size(); ++i) {
        EXPECT_EQ(read[i].file, written[i].file);
        EXPECT_EQ(read[i].pointer, written[i].pointer);
        EXPECT_EQ(read[i].message, written[i].message);
        EXPECT_EQ(read[i].hint, written[i].hint);
    }
}

// ---------------------------------------------------------------------------
// Status and kill switch

control::KillSwitchState scoped_kill_switch() {
    control::KillSwitchState state;
    state.scope.gateways = {"ci", "contract"};
    state.scope.connectors = {"github"};
    state.reason = "leaked token";
    state.actor = "uid:1000 pid:42 via REST";
    return state;
}

void expect_kill_switch(const KillSwitchView& read, const control::KillSwitchState& written) {
    EXPECT_EQ(read.active, written.active());
    EXPECT_EQ(read.all, written.scope.all);
    EXPECT_EQ(read.gateways, std::vector<std::string>(written.scope.gateways.begin(), written.scope.gateways.end()));
    EXPECT_EQ(read.connectors,
              std::vector<std::string>(written.scope.connectors.begin(), written.scope.connectors.end()));
    EXPECT_EQ(read.reason, written.reason);
    EXPECT_EQ(read.actor, written.actor);
}

TEST(ApiModel, TheKillSwitchSurvivesInEveryScope) {
    const auto scoped = scoped_kill_switch();
    expect_kill_switch(kill_switch_from_json(wire(control::to_json(scoped))), scoped);
    EXPECT_TRUE(kill_switch_from_json(wire(control::to_json(scoped))).active);

    control::KillSwitchState all;
    all.scope.all = true;
    expect_kill_switch(kill_switch_from_json(wire(control::to_json(all))), all);
    EXPECT_TRUE(kill_switch_from_json(wire(control::to_json(all))).all);

    const control::KillSwitchState off;
    expect_kill_switch(kill_switch_from_json(wire(control::to_json(off))), off);
    EXPECT_FALSE(kill_switch_from_json(wire(control::to_json(off))).active);
}

TEST(ApiModel, TheStatusSurvives) {
    control::DaemonStatus status;
    status.version = "0.1.0";
    status.started = at(1h + 2min + 3s + 456789us);
    status.uptime = 93784s;
    status.kernel_enforcement = true;
    status.agents = 3;
    status.gateways = 5;
    status.kill_switch = scoped_kill_switch();
    status.pending_approvals = 2;
    status.counters.connections_open = 7;
    status.counters.connections_total = std::uint64_t{1} << 40;  // beyond 32 bits
    status.counters.requests = 123456789012ULL;
    status.counters.held = 1;
    status.caller_uid = 1000;
    status.caller_role = control::Role::admin;

    const auto read = status_from_json(wire(control::to_json(status)));
    EXPECT_EQ(read.version, status.version);
    EXPECT_EQ(read.started, store::format_time(status.started));
    EXPECT_EQ(read.uptime_seconds, status.uptime.count());
    EXPECT_EQ(read.enforcement, "kernel");
    EXPECT_EQ(read.agents, status.agents);
    EXPECT_EQ(read.gateways, status.gateways);
    expect_kill_switch(read.kill_switch, status.kill_switch);
    EXPECT_EQ(read.pending_approvals, status.pending_approvals);
    EXPECT_EQ(read.counters.connections_open, status.counters.connections_open);
    EXPECT_EQ(read.counters.connections_total, status.counters.connections_total);
    EXPECT_EQ(read.counters.requests, status.counters.requests);
    EXPECT_EQ(read.counters.held, status.counters.held);
    EXPECT_EQ(read.caller.uid, status.caller_uid);
    EXPECT_EQ(read.caller.role, "admin");

    status.kernel_enforcement = false;
    EXPECT_EQ(status_from_json(wire(control::to_json(status))).enforcement, "explicit");
}

// ---------------------------------------------------------------------------
// Gateways

void expect_summary(const GatewaySummary& read, const policy::Gateway& written) {
    EXPECT_EQ(read.name, written.name);
    EXPECT_EQ(read.description, written.description);
    EXPECT_EQ(read.enforcement, policy::to_string(written.enforcement));
    std::vector<std::string> names;
    for (const auto& connector : written.connectors) names.push_back(connector.name);
    EXPECT_EQ(read.connectors, names);
    EXPECT_EQ(read.policies, written.policies.size());
    EXPECT_EQ(read.rate_limit.requests, written.rate_limit.requests);
    EXPECT_EQ(read.rate_limit.window_seconds, written.rate_limit.window.count());
    EXPECT_EQ(read.approval_timeout_seconds, written.approval_timeout.count());
    EXPECT_EQ(read.origin, written.origin);
}

TEST(ApiModel, AGatewaysSummaryAndTheListOfThemSurvive) {
    const auto config = contract_config();
    ASSERT_TRUE(config);
    const auto* gateway = config->gateway("contract");
    ASSERT_NE(gateway, nullptr);
    ASSERT_EQ(gateway->connectors.size(), 2U);
    ASSERT_EQ(gateway->policies.size(), 1U);

    expect_summary(gateway_summary_from_json(wire(control::summary_json(*gateway))), *gateway);

    const std::vector<control::GatewayView> views{{config, gateway}};
    const auto list = gateways_from_json(wire(control::to_json(views)));
    ASSERT_EQ(list.size(), 1U);
    expect_summary(list[0], *gateway);
}

TEST(ApiModel, AGatewaysDetailSurvivesWithItsConnectorsPoliciesTcpAndLaunch) {
    const auto config = contract_config();
    ASSERT_TRUE(config);
    const auto* gateway = config->gateway("contract");
    ASSERT_NE(gateway, nullptr);

    const auto read = gateway_detail_from_json(wire(control::to_json(control::GatewayView{config, gateway})));
    // The detail lists objects where the summary has names and a count: both read the same.
    expect_summary(read.summary, *gateway);

    ASSERT_EQ(read.connectors.size(), gateway->connectors.size());
    for (std::size_t i = 0; i < read.connectors.size(); ++i) {
        const auto& connector = read.connectors[i];
        const auto& written = gateway->connectors[i];
        SCOPED_TRACE(written.name);
        EXPECT_EQ(connector.name, written.name);
        EXPECT_TRUE(connector.described);
        ASSERT_TRUE(written.def);
        EXPECT_EQ(connector.type, written.def->name);
        EXPECT_EQ(connector.domains, written.domains);
        EXPECT_EQ(connector.credential, written.credential);
        EXPECT_EQ(connector.preset, policy::to_string(written.preset));
        ASSERT_EQ(connector.rules.size(), written.rules.size());
        for (std::size_t j = 0; j < connector.rules.size(); ++j) {
            EXPECT_EQ(connector.rules[j].pattern, written.rules[j].pattern);
            EXPECT_EQ(connector.rules[j].effect, policy::to_string(written.rules[j].effect));
        }
    }
    EXPECT_EQ(read.connectors[0].credential, "github-token");  // the file's values, not only defaults
    EXPECT_EQ(read.connectors[0].rules.size(), 2U);

    ASSERT_EQ(read.policies.size(), 1U);
    EXPECT_EQ(read.policies[0].name, gateway->policies[0].name);
    EXPECT_EQ(read.policies[0].actions, gateway->policies[0].actions);
    EXPECT_EQ(read.policies[0].effect, policy::to_string(gateway->policies[0].effect));
    EXPECT_EQ(read.policies[0].reason, gateway->policies[0].reason);

    ASSERT_EQ(read.tcp.size(), gateway->tcp.size());
    for (std::size_t i = 0; i < read.tcp.size(); ++i) {
        EXPECT_EQ(read.tcp[i].host, gateway->tcp[i].host);
        EXPECT_EQ(read.tcp[i].cidr, gateway->tcp[i].cidr);
        EXPECT_EQ(read.tcp[i].port, gateway->tcp[i].port);
    }
    EXPECT_EQ(read.tcp[0].host, "db.internal");
    EXPECT_EQ(read.tcp[1].cidr, "192.0.2.0/24");

    EXPECT_EQ(read.launch.users, gateway->launch_users);
    EXPECT_EQ(read.launch.groups, gateway->launch_groups);
}

TEST(ApiModel, ADetailReadFromASummaryKeepsTheConnectorsNames) {
    const auto config = contract_config();
    ASSERT_TRUE(config);
    const auto read = gateway_detail_from_json(wire(control::summary_json(*config->gateway("contract"))));
    ASSERT_EQ(read.connectors.size(), 2U);
    EXPECT_EQ(read.connectors[0].name, "github");
    EXPECT_FALSE(read.connectors[0].described);
    EXPECT_TRUE(read.policies.empty());  // a count, not the policies
    EXPECT_EQ(read.summary.policies, 1U);
}

// ---------------------------------------------------------------------------
// Agents

control::AgentInfo some_agent() {
    control::AgentInfo agent;
    agent.id = "claude-7f3a";
    agent.gateway = "contract";
    agent.isolation = "netns";
    agent.cgroup_id = 0xFFFF'FFFF'0000'1234ULL;  // beyond what a signed 64-bit number holds
    agent.pid = 4242;
    agent.uid = 1000;
    agent.run_uid = 61234;
    agent.command = "claude --resume";
    agent.enforced_unit = true;
    return agent;
}

void expect_agent(const AgentView& read, const control::AgentInfo& written) {
    EXPECT_EQ(read.id, written.id);
    EXPECT_EQ(read.gateway, written.gateway);
    EXPECT_EQ(read.isolation, written.isolation);
    EXPECT_EQ(read.pid, written.pid);
    EXPECT_EQ(read.uid, written.uid);
    ASSERT_TRUE(read.run_uid);
    EXPECT_EQ(*read.run_uid, written.run_uid);
    EXPECT_EQ(read.cgroup_id, written.cgroup_id);
    EXPECT_EQ(read.command, written.command);
    EXPECT_EQ(read.enforced_unit, written.enforced_unit);
}

TEST(ApiModel, AnAgentAndTheListOfThemSurvive) {
    const auto agent = some_agent();
    expect_agent(agent_from_json(wire(control::to_json(agent))), agent);
    expect_agent(agent_from_json(wire(control::to_json(control::AgentStopping{agent}))), agent);

    auto other = some_agent();
    other.id = "aider-1";
    other.enforced_unit = false;
    const auto list = agents_from_json(wire(control::to_json(std::vector<control::AgentInfo>{agent, other})));
    ASSERT_EQ(list.size(), 2U);
    expect_agent(list[0], agent);
    expect_agent(list[1], other);
}

// ---------------------------------------------------------------------------
// Approvals

control::Approval some_approval() {
    control::Approval approval;
    approval.id = "req-91c2";
    approval.gateway = "contract";
    approval.agent = "claude-7f3a";
    approval.connector = "github";
    approval.action = "github.pr.merge";
    approval.risk = "high";
    approval.parameters = R"({"owner": "octo", "repo": "app", "number": 7})";
    approval.reason = "rule github.pr.merge -> require_approval";
    approval.requested_at = std::chrono::system_clock::now() - 90s;
    approval.timeout = 300s;
    return approval;
}

void expect_approval(const ApprovalView& read, const control::Approval& written) {
    EXPECT_EQ(read.id, written.id);
    EXPECT_EQ(read.gateway, written.gateway);
    EXPECT_EQ(read.agent, written.agent);
    EXPECT_EQ(read.connector, written.connector);
    EXPECT_EQ(read.action, written.action);
    EXPECT_EQ(read.risk, written.risk);
    EXPECT_EQ(read.parameters, json::parse(written.parameters));
    EXPECT_EQ(read.reason, written.reason);
    EXPECT_EQ(read.requested, store::format_time(written.requested_at));
    EXPECT_GE(read.age_seconds, 90);
    EXPECT_LT(read.age_seconds, 90 + 60);  // however slow the test machine
    EXPECT_EQ(read.timeout_seconds, written.timeout.count());
}

TEST(ApiModel, AnApprovalAndTheListOfThemSurvive) {
    const auto approval = some_approval();
    expect_approval(approval_from_json(wire(control::to_json(approval))), approval);

    const std::vector<control::Approval> pending{approval, some_approval()};
    const auto document = wire(control::to_json(pending));
    const auto list = approvals_from_json(document);
    ASSERT_EQ(list.size(), 2U);
    for (std::size_t i = 0; i < list.size(); ++i) expect_approval(list[i], pending[i]);
    // As sent, for tf approvals watch's JSON Lines.
    const auto documents = approval_documents(document);
    ASSERT_EQ(documents.size(), 2U);
    EXPECT_EQ(documents[0], document.at("approvals")[0]);
    EXPECT_EQ(approval_from_json(documents[1]).id, approval.id);
}

TEST(ApiModel, ParametersThatAreNotJsonArriveAsTheirText) {
    auto approval = some_approval();
    approval.parameters = "not {json";
    EXPECT_EQ(approval_from_json(wire(control::to_json(approval))).parameters, json("not {json"));
    approval.parameters.clear();
    EXPECT_EQ(approval_from_json(wire(control::to_json(approval))).parameters, json::object());
}

TEST(ApiModel, AnAnswerSurvives) {
    const control::ApprovalAnswered answered{"req-91c2", true, "looks fine", "uid:1000 pid:42 via REST"};
    const auto read = approval_resolved_from_json(wire(control::to_json(answered)));
    EXPECT_EQ(read.id, answered.id);
    EXPECT_EQ(read.approved, answered.approved);
    EXPECT_EQ(read.note, answered.note);
    EXPECT_EQ(read.actor, answered.actor);
    EXPECT_FALSE(read.expired);
}

// The live events tf approvals watch reads, as the control plane publishes them.
TEST(ApiModel, TheApprovalEventsSurvive) {
    control::EventHub hub;
    proxy::ApprovalQueue queue;
    control::ObservedApprovals observed(queue, hub);
    std::vector<control::Event> events;
    hub.subscribe([&](const control::Event& event) { events.push_back(event); });

    const auto answered = some_approval();
    observed.submit(answered, [](const proxy::ApprovalAnswer&) {});
    ASSERT_EQ(events.size(), 1U);
    EXPECT_EQ(events[0].type, "approval.requested");
    expect_approval(approval_from_json(wire(events[0].data)), answered);

    ASSERT_TRUE(queue.answer(answered.id, proxy::ApprovalAnswer{false, "not on a Friday", "uid:1000"}));
    ASSERT_EQ(events.size(), 2U);
    EXPECT_EQ(events[1].type, "approval.resolved");
    const auto denied = approval_resolved_from_json(wire(events[1].data));
    EXPECT_EQ(denied.id, answered.id);
    EXPECT_FALSE(denied.approved);
    EXPECT_FALSE(denied.expired);
    EXPECT_EQ(denied.note, "not on a Friday");
    EXPECT_EQ(denied.actor, "uid:1000");

    auto withdrawn = some_approval();
    withdrawn.id = "req-timed-out";
    observed.submit(withdrawn, [](const proxy::ApprovalAnswer&) {});
    observed.withdraw(withdrawn.id);
    ASSERT_EQ(events.size(), 4U);
    EXPECT_EQ(events[3].type, "approval.resolved");
    const auto expired = approval_resolved_from_json(wire(events[3].data));
    EXPECT_EQ(expired.id, withdrawn.id);
    EXPECT_TRUE(expired.expired);
    EXPECT_FALSE(expired.approved);
}

// ---------------------------------------------------------------------------
// Configuration

TEST(ApiModel, AReloadSurvivesAndARefusalKeepsEveryError) {
    control::ReloadResult reloaded;
    reloaded.reloaded = true;
    reloaded.summary = "12 connectors, 3 gateways";
    const auto done = reload_from_json(wire(control::to_json(reloaded)));
    EXPECT_TRUE(done.reloaded);
    EXPECT_EQ(done.summary, reloaded.summary);
    EXPECT_FALSE(done.errors);

    control::ReloadResult refused;
    refused.errors = some_errors();
    const auto read = reload_from_json(wire(control::to_json(refused)));
    EXPECT_FALSE(read.reloaded);
    ASSERT_TRUE(read.errors);
    expect_errors(*read.errors, refused.errors);

    // As POST /v1/reload refuses it: the error document with the errors (daemon/api/dispatch.cpp).
    json refusal{{"error", "config_invalid"}, {"message", "the configuration on disk is invalid"}, {"hint", "fix it"}};
    refusal["errors"] = control::to_json(refused.errors);
    const auto from_refusal = reload_from_json(wire(refusal));
    ASSERT_TRUE(from_refusal.errors);
    expect_errors(*from_refusal.errors, refused.errors);
}

TEST(ApiModel, AConfigurationCheckSurvives) {
    control::ConfigCheck invalid;
    invalid.errors = some_errors();
    const auto read = config_check_from_json(wire(control::to_json(invalid)));
    EXPECT_FALSE(read.valid);
    expect_errors(read.errors, invalid.errors);

    const control::ConfigCheck valid{true, {}};
    const auto fine = config_check_from_json(wire(control::to_json(valid)));
    EXPECT_TRUE(fine.valid);
    EXPECT_TRUE(fine.errors.empty());
}

TEST(ApiModel, APolicyTestsDecisionSurvives) {
    const auto config = contract_config();
    ASSERT_TRUE(config);
    const auto& gateway = *config->gateway("contract");
    policy::EvalContext context;
    context.agent = "policy-test";
    context.all_parameters = true;
    const auto evaluation =
        policy::evaluate(gateway, policy::Request{"PUT", "api.github.com", "/repos/octo/app/pulls/7/merge"}, context);
    ASSERT_FALSE(evaluation.actions.empty());
    ASSERT_FALSE(evaluation.decision.trace.empty());

    const auto read = decision_from_json(wire(policy::to_json(gateway, evaluation)));
    const auto& decision = evaluation.decision;
    EXPECT_EQ(read.gateway, gateway.name);
    EXPECT_EQ(read.enforcement, policy::to_string(gateway.enforcement));
    ASSERT_NE(evaluation.connector, nullptr);
    EXPECT_EQ(read.connector, evaluation.connector->name);
    EXPECT_EQ(read.decision, policy::to_string(decision.label));
    EXPECT_EQ(read.verdict, policy::to_string(decision.verdict));
    EXPECT_EQ(read.effect, policy::to_string(decision.effect));
    EXPECT_EQ(read.reason, decision.reason);
    EXPECT_EQ(read.approval_timeout_seconds,
              decision.verdict == policy::Verdict::hold ? decision.approval_timeout.count() : 0);
    ASSERT_EQ(read.actions.size(), evaluation.actions.size());
    for (std::size_t i = 0; i < read.actions.size(); ++i) {
        const auto& written = evaluation.actions[i];
        EXPECT_EQ(read.actions[i].action, written.type);
        EXPECT_EQ(read.actions[i].risk, policy::to_string(written.risk));
        EXPECT_EQ(read.actions[i].access, policy::to_string(written.access));
        EXPECT_EQ(read.actions[i].route, written.route);
        EXPECT_EQ(read.actions[i].parameters, written.parameters);
        EXPECT_EQ(read.actions[i].parameters_complete, written.parameters_complete);
    }
    ASSERT_EQ(read.trace.size(), decision.trace.size());
    for (std::size_t i = 0; i < read.trace.size(); ++i) {
        EXPECT_EQ(read.trace[i].stage, decision.trace[i].stage);
        EXPECT_EQ(read.trace[i].detail, decision.trace[i].detail);
    }
}

// ---------------------------------------------------------------------------
// The vault and the audit check

TEST(ApiModel, TheVaultsAnswersSurvive) {
    store::VaultEntry used{"github-token", "github", "ghp_...7Q", at(1s), at(2h + 500us), at(3h + 1us)};
    store::VaultEntry unused{"openai-key", "", "sk-...x", at(4s), at(5s), std::nullopt};
    const auto entries = vault_entries_from_json(wire(control::to_json(std::vector<store::VaultEntry>{used, unused})));
    ASSERT_EQ(entries.size(), 2U);
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& written = i == 0 ? used : unused;
        EXPECT_EQ(entries[i].name, written.name);
        EXPECT_EQ(entries[i].connector, written.connector);
        EXPECT_EQ(entries[i].hint, written.hint);
        EXPECT_EQ(entries[i].created, written.created);
        EXPECT_EQ(entries[i].updated, written.updated);
        EXPECT_EQ(entries[i].last_used, written.last_used);
    }

    const control::SecretStored stored{"github-token", "github", "ghp_...7Q", at(6s)};
    const auto read = secret_stored_from_json(wire(control::to_json(stored)));
    EXPECT_EQ(read.name, stored.name);
    EXPECT_EQ(read.connector, stored.connector);
    EXPECT_EQ(read.hint, stored.hint);
    EXPECT_EQ(read.updated, store::format_time(*stored.updated));

    EXPECT_EQ(vault_rotated_from_json(wire(control::to_json(control::VaultRotated{17}))).rotated, 17U);
}

TEST(ApiModel, TheAuditChecksReportSurvives) {
    store::VerifyReport broken;
    broken.ok = false;
    broken.records = 5000;
    broken.first_seq = 12;
    broken.last_seq = 5011;
    broken.checkpoints = 4;
    broken.unsigned_checkpoints = 1;
    broken.after_last_checkpoint = 11;
    broken.broken_seq = 4711;
    broken.problem = "the hash of record 4711 does not chain";
    const auto read = verify_report_from_json(wire(control::to_json(broken)));
    EXPECT_EQ(read.ok, broken.ok);
    EXPECT_EQ(read.records, broken.records);
    EXPECT_EQ(read.first_seq, broken.first_seq);
    EXPECT_EQ(read.last_seq, broken.last_seq);
    EXPECT_EQ(read.checkpoints, broken.checkpoints);
    EXPECT_EQ(read.unsigned_checkpoints, broken.unsigned_checkpoints);
    EXPECT_EQ(read.after_last_checkpoint, broken.after_last_checkpoint);
    EXPECT_EQ(read.broken_seq, broken.broken_seq);
    EXPECT_EQ(read.problem, broken.problem);

    EXPECT_TRUE(verify_report_from_json(wire(control::to_json(store::VerifyReport{}))).ok);
}

// ---------------------------------------------------------------------------
// The logs: the store's JSON Lines objects, and the live event "traffic"

std::vector<json> json_lines(const std::string& text) {
    std::vector<json> out;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) out.push_back(json::parse(line));
    return out;
}

store::TrafficRow some_row() {
    store::TrafficRow row;
    row.time = at(10h + 1us);
    row.request_id = "req-91c2";
    row.gateway = "contract";
    row.agent = "claude-7f3a";
    row.connector = "github";
    row.action = "github.pr.merge";
    row.method = "PUT";
    row.host = "api.github.com";
    row.path = "/repos/octo/app/pulls/7/merge";
    row.decision = "approved";
    row.reason = "approved by uid:1000";
    row.status = 200;
    row.request_bytes = 5'000'000'000ULL;  // beyond 32 bits
    row.response_bytes = 321;
    row.latency = 1234567us;
    row.forwarded = true;
    row.completed = false;
    return row;
}

void expect_row(const store::TrafficRow& read, const store::TrafficRow& written) {
    EXPECT_EQ(read.time, written.time);
    EXPECT_EQ(read.request_id, written.request_id);
    EXPECT_EQ(read.gateway, written.gateway);
    EXPECT_EQ(read.agent, written.agent);
    EXPECT_EQ(read.connector, written.connector);
    EXPECT_EQ(read.action, written.action);
    EXPECT_EQ(read.method, written.method);
    EXPECT_EQ(read.host, written.host);
    EXPECT_EQ(read.path, written.path);
    EXPECT_EQ(read.decision, written.decision);
    EXPECT_EQ(read.reason, written.reason);
    EXPECT_EQ(read.status, written.status);
    EXPECT_EQ(read.request_bytes, written.request_bytes);
    EXPECT_EQ(read.response_bytes, written.response_bytes);
    EXPECT_EQ(read.latency, written.latency);
    EXPECT_EQ(read.forwarded, written.forwarded);
    EXPECT_EQ(read.completed, written.completed);
}

TEST(ApiModel, ATrafficRowSurvivesAsTheStoreWritesIt) {
    const auto row = some_row();
    std::ostringstream out;
    store::TrafficWriter(out, store::Format::jsonl).write(row);
    const auto lines = json_lines(out.str());
    ASSERT_EQ(lines.size(), 1U);
    expect_row(traffic_row_from_json(lines[0]), row);

    // GET /v1/traffic?format=json: the same objects under "rows" (daemon/api/requests.cpp).
    const auto rows = traffic_documents(wire(json{{"rows", lines}}));
    ASSERT_EQ(rows.size(), 1U);
    EXPECT_EQ(rows[0], lines[0]);
}

// A sink that keeps nothing: the metrics pass records on to it.
class NoSink : public proxy::TrafficSink {
public:
    void record(proxy::TrafficRecord /*record*/) override {}
};

TEST(ApiModel, TheTrafficEventSurvives) {
    control::EventHub hub;
    NoSink sink;
    control::Metrics metrics(sink, hub);
    std::vector<control::Event> events;
    hub.subscribe([&](const control::Event& event) { events.push_back(event); });

    const auto row = some_row();
    proxy::TrafficRecord record;
    record.time = row.time;
    record.request_id = row.request_id;
    record.gateway = row.gateway;
    record.agent = row.agent;
    record.connector = row.connector;
    record.action = row.action;
    record.method = row.method;
    record.host = row.host;
    record.path = row.path;
    record.decision = row.decision;
    record.reason = row.reason;
    record.status = row.status;
    record.latency = row.latency;
    metrics.record(record);
    ASSERT_EQ(events.size(), 1U);
    EXPECT_EQ(events[0].type, "traffic");

    // The event carries no sizes and is sent when the request has ended.
    auto expected = row;
    expected.request_bytes = 0;
    expected.response_bytes = 0;
    expected.forwarded = false;
    expected.completed = true;
    expect_row(traffic_row_from_json(wire(events[0].data)), expected);
}

TEST(ApiModel, AnAuditRecordSurvivesAsTheStoreWritesIt) {
    store::AuditRecord record;
    record.seq = 4711;
    record.event = {at(11h + 7us),
                    "approval.denied",
                    "contract",
                    "claude-7f3a",
                    "uid:1000",
                    "req-91c2",
                    R"({"action":"github.pr.merge","note":"not on a Friday"})"};
    store::AuditRecord plain = record;
    plain.seq = 4712;
    plain.event.details = "not an object";  // kept as text by the store, read back as that text
    store::AuditRecord bare = record;
    bare.seq = 4713;
    bare.event.details.clear();

    std::ostringstream out;
    store::AuditWriter writer(out, store::Format::jsonl);
    for (const auto& each : {record, plain, bare}) writer.write(each);
    const auto lines = json_lines(out.str());
    ASSERT_EQ(lines.size(), 3U);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto& written = i == 0 ? record : i == 1 ? plain : bare;
        const auto read = audit_record_from_json(lines[i]);
        EXPECT_EQ(read.seq, written.seq);
        EXPECT_EQ(read.event.time, written.event.time);
        EXPECT_EQ(read.event.event, written.event.event);
        EXPECT_EQ(read.event.gateway, written.event.gateway);
        EXPECT_EQ(read.event.agent, written.event.agent);
        EXPECT_EQ(read.event.actor, written.event.actor);
        EXPECT_EQ(read.event.subject, written.event.subject);
        EXPECT_EQ(read.event.details, written.event.details);
    }
}

// ---------------------------------------------------------------------------
// Documents of the wrong shape

// Every reader, each with the empty view it gives when there is nothing to read.
struct Reader {
    const char* name;
    std::function<bool(const json&)> reads_empty;  // throws what the reader throws
};

template <typename View>
Reader reader(const char* name, View (*read)(const json&)) {
    return {name, [read](const json& document) { return read(document) == View{}; }};
}

template <typename View>
Reader list_reader(const char* name, std::vector<View> (*read)(const json&)) {
    return {name, [read](const json& document) { return read(document).empty(); }};
}

const std::vector<Reader>& readers() {
    static const std::vector<Reader> all{
        reader("kill switch", kill_switch_from_json),
        reader("status", status_from_json),
        reader("gateway summary", gateway_summary_from_json),
        reader("gateway detail", gateway_detail_from_json),
        list_reader("gateways", gateways_from_json),
        reader("agent", agent_from_json),
        list_reader("agents", agents_from_json),
        reader("approval", approval_from_json),
        list_reader("approvals", approvals_from_json),
        list_reader("approval documents", approval_documents),
        reader("approval resolved", approval_resolved_from_json),
        reader("config error", config_error_from_json),
        reader("reload", reload_from_json),
        reader("config check", config_check_from_json),
        reader("decision", decision_from_json),
        reader("secret stored", secret_stored_from_json),
        reader("vault rotated", vault_rotated_from_json),
        list_reader("vault entries", vault_entries_from_json),
        list_reader("traffic documents", traffic_documents),
        {"verify report",
         [](const json& document) {
             const auto read = verify_report_from_json(document);
             return !read.ok && read.records == 0 && read.first_seq == 0 && read.broken_seq == 0 &&
                    read.problem.empty();
         }},
        {"traffic row",
         [](const json& document) {
             const auto read = traffic_row_from_json(document);
             return read.request_id.empty() && read.decision.empty() && read.status == 0 && read.request_bytes == 0 &&
                    read.latency.count() == 0 && !read.forwarded && read.completed;
         }},
        {"audit record",
         [](const json& document) {
             const auto read = audit_record_from_json(document);
             return read.seq == 0 && read.event.event.empty() && read.event.details.empty();
         }},
    };
    return all;
}

// Whole documents that are not objects, and an object with none of the members.
TEST(ApiModel, ADocumentThatIsNotAnObjectReadsAsEmpty) {
    const std::vector<json> shapes{nullptr, json::array({1, "two", nullptr}), "text", 42, -1.5, true, json::object()};
    for (const auto& checked : readers()) {
        for (const auto& shape : shapes) {
            SCOPED_TRACE(std::string(checked.name) + " of " + shape.dump());
            bool empty = false;
            EXPECT_NO_THROW(empty = checked.reads_empty(shape));
            EXPECT_TRUE(empty);
        }
    }
}

// Each member of a well-formed document given a value of another kind: text
// becomes an array, a number text, a boolean text, an array an object, an
// object an array. The members kept as they were sent, whatever they are
// (an approval's parameters, an audit record's details), are left out.
json every_member_wrong(const json& document) {
    json out = json::object();
    for (const auto& [key, value] : document.items()) {
        if (key == "parameters" || key == "details") continue;
        if (value.is_string()) {
            out[key] = json::array({value});
        } else if (value.is_number() || value.is_boolean()) {
            out[key] = "not " + value.dump();
        } else if (value.is_array()) {
            out[key] = json{{"0", value}};
        } else {
            out[key] = json::array({value});
        }
    }
    return out;
}

TEST(ApiModel, MembersOfTheWrongKindReadAsEmpty) {
    const auto config = contract_config();
    ASSERT_TRUE(config);
    const auto* gateway = config->gateway("contract");
    control::DaemonStatus status;
    status.kill_switch = scoped_kill_switch();
    control::ReloadResult refused;
    refused.errors = some_errors();
    policy::EvalContext context;
    context.agent = "policy-test";
    const auto evaluation = policy::evaluate(*gateway, policy::Request{"GET", "api.github.com", "/user"}, context);
    std::ostringstream rows;
    store::TrafficWriter(rows, store::Format::jsonl).write(some_row());
    std::ostringstream records;
    store::AuditWriter(records, store::Format::jsonl)
        .write(store::AuditRecord{7, {at(1s), "vault.set", "", "", "root", "n", "{}"}});
    const std::vector<std::pair<const char*, json>> documents{
        {"kill switch", control::to_json(scoped_kill_switch())},
        {"status", control::to_json(status)},
        {"gateway summary", control::summary_json(*gateway)},
        {"gateway detail", control::to_json(control::GatewayView{config, gateway})},
        {"gateways", control::to_json(std::vector<control::GatewayView>{{config, gateway}})},
        {"agent", control::to_json(some_agent())},
        {"agents", control::to_json(std::vector<control::AgentInfo>{some_agent()})},
        {"approval", control::to_json(some_approval())},
        {"approvals", control::to_json(std::vector<control::Approval>{some_approval()})},
        {"approval documents", control::to_json(std::vector<control::Approval>{some_approval()})},
        {"approval resolved", control::to_json(control::ApprovalAnswered{"a", true, "n", "u"})},
        {"config error", control::to_json(some_errors())[0]},
        {"reload", control::to_json(refused)},
        {"config check", control::to_json(control::ConfigCheck{false, some_errors()})},
        {"decision", policy::to_json(*gateway, evaluation)},
        {"secret stored", control::to_json(control::SecretStored{"n", "c", "h", at(1s)})},
        {"vault rotated", control::to_json(control::VaultRotated{3})},
        {"vault entries", control::to_json(std::vector<store::VaultEntry>{{"n", "c", "h", at(1s), at(2s), {}}})},
        {"verify report", control::to_json(store::VerifyReport{})},
        {"traffic documents", json{{"rows", json::array({json::object()})}}},
        {"traffic row", json::parse(rows.str())},
        {"audit record", json::parse(records.str())},
    };
    for (const auto& [name, document] : documents) {
        const auto found = std::find_if(readers().begin(), readers().end(),
                                        [name = name](const Reader& each) { return std::string(each.name) == name; });
        ASSERT_NE(found, readers().end()) << name;
        SCOPED_TRACE(std::string(name) + " of " + every_member_wrong(document).dump());
        EXPECT_FALSE(found->reads_empty(wire(document)));  // the well-formed one is not empty
        bool empty = false;
        EXPECT_NO_THROW(empty = found->reads_empty(wire(every_member_wrong(document))));
        EXPECT_TRUE(empty);
    }
}

TEST(ApiModel, ElementsOfTheWrongKindReadAsEmptyViews) {
    const json list{{"agents", json::array({nullptr, 7, "x", json::array()})}};
    const auto agents = agents_from_json(list);
    ASSERT_EQ(agents.size(), 4U);  // one row each, as the daemon listed them
    for (const auto& agent : agents) EXPECT_EQ(agent, AgentView{});

    // A member that is not a list of the objects it should be: nothing of it is read.
    const auto detail =
        gateway_detail_from_json(json{{"connectors", {{"name", "a"}}}, {"policies", "all"}, {"tcp", nullptr}});
    EXPECT_TRUE(detail.connectors.empty());
    EXPECT_TRUE(detail.policies.empty());
    EXPECT_TRUE(detail.tcp.empty());
}

TEST(ApiModel, NumbersAndTextReadAsTfShowsThem) {
    // A number or boolean where text belongs is its JSON text; text where a number belongs is 0.
    const auto agent = agent_from_json(json{{"id", 42}, {"gateway", true}, {"pid", "4242"}, {"uid", -5}});
    EXPECT_EQ(agent.id, "42");
    EXPECT_EQ(agent.gateway, "true");
    EXPECT_EQ(agent.pid, 0);
    EXPECT_EQ(agent.uid, 0U);
    EXPECT_FALSE(agent.run_uid);
    // A fraction is cut off; a number no integer holds reads as 0.
    const auto status = status_from_json(json{{"uptime_seconds", 90.9}, {"agents", 1e300}});
    EXPECT_EQ(status.uptime_seconds, 90);
    EXPECT_EQ(status.agents, 0U);
    // A lone name is a list of one.
    EXPECT_EQ(kill_switch_from_json(json{{"gateways", "ci"}}).gateways, std::vector<std::string>{"ci"});
}

}  // namespace
}  // namespace tameflare::cli
