// The control plane in-process (daemon/control): who may call each operation
// (the role x operation matrix, callers inside an agent's cgroup), the live
// events hub, the metrics counted from traffic records, and a few operations'
// effects. The parts are the real ones, built the way the supervisor builds
// them (daemon/supervisor.cpp): a store and a vault in a temporary state
// directory, a proxy server without listeners, no kernel enforcement.
#include "tests/daemon/control/control_plane.h"

#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/control/kill_switch.h"
#include "daemon/control/metrics.h"
#include "daemon/daemon_config.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/server.h"
#include "daemon/store/audit.h"
#include "daemon/store/query.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "daemon/store_services.h"
#include "daemon/vault/vault_crypto.h"
#include "tests/support/temp_dir.h"

#include <grp.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::control {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Kind = ControlError::Kind;
using namespace std::chrono_literals;

using namespace test_support;  // NOLINT(google-build-using-namespace)

// What calling an operation came to: nothing thrown, a ControlError, or
// something else (a bug whatever the caller).
struct Attempt {
    std::optional<ControlError> error;
    std::string other;

    [[nodiscard]] bool refused(std::string_view code) const {
        return error && error->kind() == Kind::forbidden && error->code() == code;
    }
};

template <typename Call>
Attempt attempt(Call&& call) {
    Attempt out;
    try {
        call();
    } catch (const ControlError& error) {
        out.error = error;
    } catch (const std::exception& error) {
        out.other = error.what();
    }
    return out;
}

// Each operation of Control, the least role that may call it, and a call.
// "Allowed" means not refused: an unknown id is not_found after the caller
// passed authorization. A new operation is one line here.
struct Operation {
    std::string_view name;
    Role least;
    std::function<void(Control&, const Caller&)> call;
};

const std::vector<Operation>& operations() {
    static const json kTest = {{"gateway", "one"}, {"method", "GET"}, {"url", "http://plain.test/x"}};
    static const std::vector<Operation> table{
        {"status", Role::viewer, [](Control& c, const Caller& who) { c.status(who); }},
        {"gateways", Role::viewer, [](Control& c, const Caller& who) { c.gateways(who); }},
        {"gateway", Role::viewer, [](Control& c, const Caller& who) { c.gateway(who, "one"); }},
        {"set_enforcement", Role::admin, [](Control& c, const Caller& who) { c.set_enforcement(who, "one", "soft"); }},
        {"reload", Role::admin, [](Control& c, const Caller& who) { c.reload(who); }},
        {"check_config", Role::admin, [](Control& c, const Caller& who) { c.check_config(who); }},
        {"test_request", Role::viewer, [](Control& c, const Caller& who) { c.test_request(who, kTest); }},
        {"agents", Role::none, [](Control& c, const Caller& who) { c.agents(who); }},
        {"agent", Role::none, [](Control& c, const Caller& who) { c.agent(who, "no-such-agent"); }},
        {"stop_agent", Role::none, [](Control& c, const Caller& who) { c.stop_agent(who, "no-such-agent"); }},
        {"approvals", Role::viewer, [](Control& c, const Caller& who) { c.approvals(who); }},
        {"approval", Role::viewer, [](Control& c, const Caller& who) { c.approval(who, "no-such-approval"); }},
        {"answer", Role::member, [](Control& c, const Caller& who) { c.answer(who, "no-such-approval", true, ""); }},
        {"kill_switch", Role::viewer, [](Control& c, const Caller& who) { c.kill_switch(who); }},
        {"set_kill_switch", Role::owner,
         [](Control& c, const Caller& who) { c.set_kill_switch(who, false, "all", "matrix"); }},
        {"traffic", Role::viewer,
         [](Control& c, const Caller& who) { c.traffic(who, {}, [](const store::TrafficRow&) {}); }},
        {"audit", Role::viewer,
         [](Control& c, const Caller& who) { c.audit(who, {}, [](const store::AuditRecord&) {}); }},
        {"verify_audit", Role::viewer, [](Control& c, const Caller& who) { c.verify_audit(who); }},
        {"vault", Role::admin, [](Control& c, const Caller& who) { c.vault(who); }},
        {"vault_set", Role::admin,
         [](Control& c, const Caller& who) { c.vault_set(who, "matrix-secret", "site", "s3cret"); }},
        {"vault_remove", Role::admin, [](Control& c, const Caller& who) { c.vault_remove(who, "no-such-secret"); }},
        {"vault_rotate", Role::admin, [](Control& c, const Caller& who) { c.vault_rotate(who); }},
        {"metrics", Role::viewer, [](Control& c, const Caller& who) { c.metrics(who); }},
    };
    return table;
}

std::set<std::string> lines(const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.insert(line);
    return out;
}

TEST_F(ControlPlane, EachOperationIsRefusedBelowItsLeastRoleAndAllowedFromIt) {
    struct Who {
        std::string label;
        Caller caller;
        Role role;
    };
    std::vector<Who> callers;
    for (const auto role : {Role::none, Role::viewer, Role::member, Role::admin, Role::owner}) {
        callers.push_back({"uid nobody as " + std::string(to_string(role)), as(role), role});
    }
    callers.push_back({"root, in no role group", root(), Role::owner});

    for (const auto& who : callers) {
        for (const auto& operation : operations()) {
            SCOPED_TRACE(who.label + " calls " + std::string(operation.name));
            const auto outcome = attempt([&] { operation.call(*control_, who.caller); });
            EXPECT_EQ(outcome.other, "");
            if (who.role < operation.least) {
                ASSERT_TRUE(outcome.error) << "allowed";
                EXPECT_EQ(outcome.error->kind(), Kind::forbidden) << outcome.error->what();
                EXPECT_EQ(outcome.error->code(), "forbidden");
                // The hint names the group that grants the role needed.
                EXPECT_NE(outcome.error->hint().find("group " + group_for(operation.least)), std::string::npos)
                    << outcome.error->hint();
            } else if (outcome.error) {
                EXPECT_NE(outcome.error->kind(), Kind::forbidden)
                    << outcome.error->code() << ": " << outcome.error->what();
            }
        }
    }
}

TEST_F(ControlPlane, TheStrongestRoleCountsFromThePrimaryGroupOrASupplementaryOneAndRootIsOwner) {
    EXPECT_EQ(role_of(root(), role_groups()), Role::owner);
    EXPECT_EQ(role_of(caller(kNobody, kNogroup, {}), role_groups()), Role::none);
    EXPECT_EQ(role_of(caller(kNobody, gids_[Role::admin], {}), role_groups()), Role::admin);
    EXPECT_EQ(role_of(caller(kNobody, kNogroup, {gids_[Role::viewer], gids_[Role::member]}), role_groups()),
              Role::member);
    EXPECT_EQ(role_of(caller(kNobody, gids_[Role::viewer], {gids_[Role::owner]}), role_groups()), Role::owner);
    // Groups that grant a role are named: a caller outside them has none.
    EXPECT_EQ(role_of(caller(kNobody, 0, {}), RoleGroups{}), Role::none);

    EXPECT_EQ(control_->authorize(as(Role::member), Role::viewer), Role::member);
    const auto status = control_->status(as(Role::viewer));
    EXPECT_EQ(status.caller_role, Role::viewer);
    EXPECT_EQ(status.caller_uid, kNobody);
    // The REST spelling of the typed status (model_json.cpp).
    const json document = to_json(status);
    EXPECT_EQ(document["caller"]["role"], "viewer");
    EXPECT_EQ(document["caller"]["uid"], kNobody);
    EXPECT_EQ(document["enforcement"], "explicit");
    EXPECT_EQ(document["kill_switch"]["active"], false);
}

TEST_F(ControlPlane, ACallerWhoseCgroupIsUnknownCountsAsAnAgentAndIsRefusedEverythingEvenAsRoot) {
    // Without kernel enforcement (no daemon::Agents) the only agent cgroup
    // Control can tell is the unknown one: "" (Caller::cgroup).
    const std::vector<std::pair<std::string, Caller>> agents{
        {"root", root("")}, {"uid nobody as owner", caller(kNobody, kNogroup, {gids_[Role::owner]}, "")}};
    for (const auto& [label, agent] : agents) {
        const Caller& who = agent;  // structured bindings are not captured below
        for (const auto& operation : operations()) {
            SCOPED_TRACE(label + " inside an agent calls " + std::string(operation.name));
            const auto outcome = attempt([&] { operation.call(*control_, who); });
            EXPECT_EQ(outcome.other, "");
            ASSERT_TRUE(outcome.error) << "allowed";
            EXPECT_TRUE(outcome.refused("agent_caller")) << outcome.error->code() << ": " << outcome.error->what();
        }
        EXPECT_TRUE(attempt([&] { control_->authorize(who, Role::none); }).refused("agent_caller"));
    }
    // Refused before anything happened.
    EXPECT_FALSE(server_->kill_switch().all);
    EXPECT_TRUE(control_->vault(root()).empty());
    EXPECT_EQ(control_->gateway(root(), "one")->enforcement, policy::Enforcement::full);
}

// --- operations ----------------------------------------------------------------

TEST_F(ControlPlane, TheKillSwitchSetByTheOwnerIsInForceInTheProxyReadBackAndAudited) {
    watch();
    // Below owner nothing changes.
    EXPECT_TRUE(attempt([&] { control_->set_kill_switch(as(Role::admin), true, "all", "no"); }).refused("forbidden"));
    EXPECT_FALSE(server_->kill_switch().all);

    const Caller owner = as(Role::owner);
    const auto set = control_->set_kill_switch(owner, true, "gateway:one", "incident 42");
    EXPECT_TRUE(set.active());
    EXPECT_EQ(set.scopes(), std::vector<std::string>{"gateway:one"});
    EXPECT_EQ(server_->kill_switch().gateways, (std::set<std::string, std::less<>>{"one"}));
    EXPECT_FALSE(server_->kill_switch().all);

    const auto read = control_->kill_switch(as(Role::viewer));
    EXPECT_EQ(to_json(read), (json{{"active", true},
                                   {"all", false},
                                   {"gateways", {"one"}},
                                   {"connectors", json::array()},
                                   {"reason", "incident 42"},
                                   {"actor", owner.describe()}}));
    EXPECT_EQ(control_->status(as(Role::viewer)).kill_switch.scopes(), std::vector<std::string>{"gateway:one"});

    const auto changed = seen("kill_switch.changed");
    ASSERT_EQ(changed.size(), 1u);
    EXPECT_EQ(changed[0].data["gateways"], json::array({"one"}));
    EXPECT_EQ(changed[0].visible_to, static_cast<int>(Role::viewer));
    EXPECT_EQ(changed[0].owner_uid, static_cast<uid_t>(-1));

    // Off for "all" lifts every scope.
    control_->set_kill_switch(owner, false, "all", "resolved");
    EXPECT_TRUE(server_->kill_switch().gateways.empty());
    EXPECT_FALSE(control_->kill_switch(as(Role::viewer)).active());

    store_->flush();
    std::vector<std::string> audited;
    store::LogFilter filter;
    filter.event = "kill_switch.";
    control_->audit(as(Role::viewer), filter, [&](const store::AuditRecord& record) {
        EXPECT_EQ(record.event.actor, owner.describe());
        audited.push_back(record.event.event);
    });
    EXPECT_EQ(audited, (std::vector<std::string>{"kill_switch.activated", "kill_switch.deactivated"}));

    for (const char* bad : {"everything", "gateway:", "connector", "all:x"}) {
        const auto outcome = attempt([&] { control_->set_kill_switch(owner, true, bad, ""); });
        ASSERT_TRUE(outcome.error) << bad;
        EXPECT_EQ(outcome.error->kind(), Kind::bad_request) << bad;
    }
    EXPECT_FALSE(server_->kill_switch().all);
}

TEST_F(ControlPlane, AnsweringAnUnknownApprovalIsNotFoundAndAnAnsweredOneIsAConflict) {
    const auto unknown = attempt([&] { control_->answer(as(Role::member), "no-such-approval", true, ""); });
    ASSERT_TRUE(unknown.error);
    EXPECT_EQ(unknown.error->kind(), Kind::not_found);
    EXPECT_EQ(unknown.error->code(), "unknown_approval");

    watch();
    hold("req-1");
    ASSERT_EQ(control_->approvals(as(Role::viewer)).size(), 1u);
    EXPECT_EQ(control_->approval(as(Role::viewer), "req-1").action, "http.post");
    EXPECT_EQ(to_json(control_->approvals(as(Role::viewer)))["approvals"][0]["action"], "http.post");
    EXPECT_EQ(control_->status(as(Role::viewer)).pending_approvals, 1u);
    EXPECT_TRUE(attempt([&] { control_->answer(as(Role::viewer), "req-1", true, ""); }).refused("forbidden"));
    EXPECT_EQ(answers_.count("req-1"), 0u);

    const Caller member = as(Role::member);
    const auto answered = control_->answer(member, "req-1", true, "looks fine");
    EXPECT_TRUE(answered.approved);
    EXPECT_EQ(answered.actor, member.describe());
    EXPECT_EQ(to_json(answered),
              (json{{"id", "req-1"}, {"approved", true}, {"note", "looks fine"}, {"actor", member.describe()}}));
    ASSERT_EQ(answers_.count("req-1"), 1u);
    EXPECT_TRUE(answers_["req-1"].approved);
    EXPECT_EQ(answers_["req-1"].note, "looks fine");
    EXPECT_EQ(answers_["req-1"].actor, member.describe());
    EXPECT_TRUE(control_->approvals(as(Role::viewer)).empty());

    ASSERT_EQ(seen("approval.requested").size(), 1u);
    const auto resolved = seen("approval.resolved");
    ASSERT_EQ(resolved.size(), 1u);
    EXPECT_EQ(resolved[0].data["id"], "req-1");
    EXPECT_EQ(resolved[0].data["approved"], true);
    EXPECT_EQ(resolved[0].data["actor"], member.describe());

    store_->flush();  // the answer is recorded: a second one is told it came too late
    const auto again = attempt([&] { control_->answer(member, "req-1", false, ""); });
    ASSERT_TRUE(again.error);
    EXPECT_EQ(again.error->kind(), Kind::conflict);
    EXPECT_NE(std::string(again.error->what()).find("approved"), std::string::npos) << again.error->what();

    hold("req-2");
    const auto long_note = attempt([&] { control_->answer(member, "req-2", false, std::string(4097, 'x')); });
    ASSERT_TRUE(long_note.error);
    EXPECT_EQ(long_note.error->kind(), Kind::bad_request);
    EXPECT_EQ(answers_.count("req-2"), 0u);
}

TEST_F(ControlPlane, AnUnknownEnforcementLevelIsABadRequestWithAHintAndAKnownOneIsAppliedAndSurvivesARestart) {
    const Caller admin = as(Role::admin);
    const auto bad = attempt([&] { control_->set_enforcement(admin, "one", "strict"); });
    ASSERT_TRUE(bad.error);
    EXPECT_EQ(bad.error->kind(), Kind::bad_request);
    EXPECT_EQ(bad.error->code(), "bad_field");
    EXPECT_NE(std::string(bad.error->what()).find("strict"), std::string::npos) << bad.error->what();
    EXPECT_NE(bad.error->hint().find("monitor, soft, full, or default"), std::string::npos) << bad.error->hint();

    const auto unknown = attempt([&] { control_->set_enforcement(admin, "nope", "soft"); });
    ASSERT_TRUE(unknown.error);
    EXPECT_EQ(unknown.error->kind(), Kind::not_found);
    EXPECT_EQ(unknown.error->code(), "unknown_gateway");

    watch();
    EXPECT_EQ(summary_json(*control_->set_enforcement(admin, "one", "monitor"))["enforcement"], "monitor");
    EXPECT_EQ(policy_.snapshot()->gateway("one")->enforcement, policy::Enforcement::monitor);
    const auto changed = seen("enforcement.changed");
    ASSERT_EQ(changed.size(), 1u);
    EXPECT_EQ(changed[0].data["gateway"], "one");
    EXPECT_EQ(changed[0].data["enforcement"], "monitor");
    EXPECT_EQ(seen("config.reloaded").size(), 1u);
    // Every audit record of the change names the admin, the saved levels' too.
    store_->flush();
    std::vector<std::string> subjects;
    store::LogFilter updated;
    updated.event = "gateway.updated";
    control_->audit(as(Role::viewer), updated, [&](const store::AuditRecord& record) {
        EXPECT_EQ(record.event.actor, admin.describe()) << record.event.subject;
        subjects.push_back(record.event.subject);
    });
    EXPECT_EQ(subjects, (std::vector<std::string>{"enforcement_overrides", "enforcement"}));
    // A reload keeps the level set at run time.
    const auto reloaded = control_->reload(admin);
    EXPECT_TRUE(reloaded.reloaded);
    EXPECT_NE(to_json(reloaded)["summary"].get<std::string>().find(" gateways"), std::string::npos);
    EXPECT_EQ(to_json(control_->gateway(as(Role::viewer), "one"))["enforcement"], "monitor");

    // A restart: the files' configuration again, a new Control that restores the level.
    policy_.publish(daemon::load_policy(*config_).config);
    control_.reset();
    control_.emplace(services(), role_groups());
    control_->restore();
    EXPECT_EQ(to_json(control_->gateway(as(Role::viewer), "one"))["enforcement"], "monitor");

    EXPECT_EQ(control_->set_enforcement(admin, "one", "default")->enforcement, policy::Enforcement::full);
    EXPECT_EQ(policy_.snapshot()->gateway("one")->enforcement, policy::Enforcement::full);
}

TEST_F(ControlPlane, TheVaultListsNamesNeverValuesAndRemovingAnUnknownSecretIsNotFound) {
    const Caller admin = as(Role::admin);
    control_->vault_set(admin, "github-pat", "site", "ghp_very_secret_value");
    const auto listed = control_->vault(admin);
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].name, "github-pat");
    const json document = to_json(listed);
    EXPECT_EQ(document["secrets"][0]["name"], "github-pat");
    EXPECT_EQ(document.dump().find("ghp_very_secret_value"), std::string::npos);
    EXPECT_EQ(vault_->get("github-pat").value_or(""), "ghp_very_secret_value");

    EXPECT_EQ(control_->vault_rotate(admin).rotated, 1u);
    EXPECT_EQ(vault_->get("github-pat").value_or(""), "ghp_very_secret_value");

    const auto bad = attempt([&] { control_->vault_set(admin, "has space", "", "x"); });
    ASSERT_TRUE(bad.error);
    EXPECT_EQ(bad.error->kind(), Kind::bad_request);
    const auto unknown = attempt([&] { control_->vault_remove(admin, "absent"); });
    ASSERT_TRUE(unknown.error);
    EXPECT_EQ(unknown.error->kind(), Kind::not_found);
    EXPECT_EQ(to_json(control_->vault_remove(admin, "github-pat")), (json{{"removed", true}, {"name", "github-pat"}}));
    EXPECT_TRUE(control_->vault(admin).empty());
}

// --- metrics -------------------------------------------------------------------

proxy::TrafficRecord record(std::string id, std::string decision, std::string action = "http.get",
                            std::string agent = "agent-1") {
    proxy::TrafficRecord out;
    out.time = std::chrono::system_clock::now();
    out.request_id = std::move(id);
    out.gateway = "one";
    out.agent = std::move(agent);
    out.connector = "site";
    out.action = std::move(action);
    out.method = "GET";
    out.host = "plain.test";
    out.path = "/x";
    out.decision = std::move(decision);
    out.status = 200;
    out.latency = 2ms;
    return out;
}

TEST_F(ControlPlane, TrafficRecordsAreCountedWithTheirLabelsInThePrometheusText) {
    auto forwarded = record("r1", "allowed");
    forwarded.forwarded = true;
    forwarded.overhead = 300us;
    metrics_->record(forwarded);
    forwarded.request_id = "r2";
    metrics_->record(forwarded);
    metrics_->record(record("r3", "denied", "http.post"));
    metrics_->record(record("r4", "kill_switch", "http.post"));
    metrics_->record(record("r5", "rate_limited"));
    metrics_->record(record("r6", "error"));
    auto refused = record("r7", "denied", "tls.certificate_refused", R"(agent "quoted")");
    refused.host = "api.example";
    metrics_->record(refused);

    hold("req-1");
    hold("req-2");
    control_->answer(as(Role::member), "req-1", true, "");
    control_->set_kill_switch(root(), true, "connector:site", "");

    const auto text = lines(control_->metrics(as(Role::viewer)));
    for (
        const char* line : {
            R"(tameflare_requests_total{gateway="one",agent="agent-1",connector="site",decision="allowed",action_type="http.get"} 2)",
            R"(tameflare_requests_total{gateway="one",agent="agent-1",connector="site",decision="denied",action_type="http.post"} 1)",
            R"(tameflare_requests_total{gateway="one",agent="agent \"quoted\"",connector="site",decision="denied",action_type="tls.certificate_refused"} 1)",
            R"(tameflare_requests_denied_total{gateway="one"} 3)",
            R"(tameflare_rate_limit_hits_total{gateway="one"} 1)",
            R"(tameflare_connector_errors_total{connector="site"} 1)",
            R"(tameflare_tls_certificate_refused_total{gateway="one",host="api.example"} 1)",
            R"(tameflare_request_duration_seconds_bucket{gateway="one",le="0.001"} 0)",
            R"(tameflare_request_duration_seconds_bucket{gateway="one",le="0.0025"} 7)",
            R"(tameflare_request_duration_seconds_count{gateway="one"} 7)",
            R"(tameflare_proxy_overhead_seconds_bucket{gateway="one",le="0.0005"} 2)",
            R"(tameflare_proxy_overhead_seconds_count{gateway="one"} 2)",
            "tameflare_requests_approved_total 1",
            "tameflare_approvals_pending 1",
            R"(tameflare_kill_switch_active{scope="all"} 0)",
            R"(tameflare_kill_switch_active{scope="connector"} 1)",
            "tameflare_active_connections 0",
            "tameflare_agents 0",
            "# TYPE tameflare_requests_total counter",
            "# TYPE tameflare_request_duration_seconds histogram",
        }) {
        EXPECT_EQ(text.count(line), 1u) << "missing: " << line;
    }

    // Every record also reached the store behind the metrics.
    store_->flush();
    std::vector<std::string> rows;
    control_->traffic(as(Role::viewer), {}, [&](const store::TrafficRow& row) { rows.push_back(row.request_id); });
    EXPECT_EQ(rows.size(), 7u);
}

TEST_F(ControlPlane, ATrafficRecordIsPublishedAsAnEventOnlyWhileSomeoneWatches) {
    metrics_->record(record("unwatched", "allowed"));
    watch();
    metrics_->record(record("watched", "denied"));
    const auto traffic = seen("traffic");
    ASSERT_EQ(traffic.size(), 1u);
    EXPECT_EQ(traffic[0].data["request_id"], "watched");
    EXPECT_EQ(traffic[0].data["decision"], "denied");
    EXPECT_EQ(traffic[0].data["gateway"], "one");
    EXPECT_EQ(traffic[0].data["latency_us"], 2000);
    EXPECT_EQ(traffic[0].id, 1u);  // nothing was published for the unwatched one
}

// --- the events hub ----------------------------------------------------------

TEST(EventHub, EverySubscriberGetsEveryEventInOrderWithIdsTheHubAssigns) {
    EventHub hub;
    EXPECT_FALSE(hub.watched());
    std::vector<std::uint64_t> first;
    std::vector<std::string> second;
    hub.subscribe([&](const Event& event) { first.push_back(event.id); });
    hub.subscribe([&](const Event& event) { second.push_back(event.type); });
    EXPECT_TRUE(hub.watched());
    hub.publish(Event{42, "a", json::object()});
    hub.publish(Event{0, "b", json::object()});
    hub.publish(Event{7, "c", json::object()});
    EXPECT_EQ(first, (std::vector<std::uint64_t>{1, 2, 3}));
    EXPECT_EQ(second, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(EventHub, AnUnsubscribedCallbackIsNeverCalledAgain) {
    EventHub hub;
    int kept = 0;
    int dropped = 0;
    hub.subscribe([&](const Event&) { ++kept; });
    const auto subscription = hub.subscribe([&](const Event&) { ++dropped; });
    hub.publish(Event{0, "a", json::object()});
    hub.unsubscribe(subscription);
    hub.publish(Event{0, "b", json::object()});
    EXPECT_EQ(kept, 2);
    EXPECT_EQ(dropped, 1);
    EXPECT_TRUE(hub.watched());
    hub.unsubscribe(1);
    EXPECT_FALSE(hub.watched());
    hub.unsubscribe(999);  // unknown: nothing
}

TEST(EventHub, AnEventIsForViewersAndNoParticularUserUnlessItSaysOtherwise) {
    const Event event{0, "x", json::object()};
    EXPECT_EQ(event.visible_to, static_cast<int>(Role::viewer));
    EXPECT_EQ(event.owner_uid, static_cast<uid_t>(-1));
}

TEST(ObservedApprovals, AHeldRequestIsAnnouncedAndResolvedOnceWhateverEndsIt) {
    EventHub hub;
    proxy::ApprovalQueue queue;
    ObservedApprovals observed(queue, hub);
    std::vector<Event> events;
    hub.subscribe([&](const Event& event) { events.push_back(event); });
    int answered = 0;
    const auto request = [](std::string id) {
        proxy::ApprovalRequest out;
        out.id = std::move(id);
        out.gateway = "one";
        out.action = "http.post";
        out.parameters = R"({"path": "/x"})";
        out.requested_at = std::chrono::system_clock::now();
        out.timeout = 60s;
        return out;
    };

    observed.submit(request("a"), [&](const proxy::ApprovalAnswer&) { ++answered; });
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].type, "approval.requested");
    EXPECT_EQ(events[0].data["id"], "a");
    EXPECT_EQ(events[0].data["parameters"]["path"], "/x");
    ASSERT_TRUE(queue.answer("a", proxy::ApprovalAnswer{false, "no", "uid:1"}));
    observed.withdraw("a");  // too late: already resolved
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[1].type, "approval.resolved");
    EXPECT_EQ(events[1].data["approved"], false);
    EXPECT_EQ(events[1].data["actor"], "uid:1");
    EXPECT_EQ(answered, 1);

    observed.submit(request("b"), [&](const proxy::ApprovalAnswer&) { ++answered; });
    observed.withdraw("b");
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[3].type, "approval.resolved");
    EXPECT_EQ(events[3].data["id"], "b");
    EXPECT_EQ(events[3].data["expired"], true);
    EXPECT_EQ(queue.size(), 0u);
    EXPECT_EQ(answered, 1);  // a withdrawn request is not answered
}

}  // namespace
}  // namespace tameflare::control
