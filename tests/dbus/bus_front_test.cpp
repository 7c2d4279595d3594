// The D-Bus front end's logic without a bus and without root (dbus/bus_front.h):
// what each method of com.tameflare.Daemon1.xml answers and refuses for a
// caller of each role, which D-Bus error a refusal becomes, the properties for
// a caller and for the daemon's own emissions, and the signals and object
// changes each control event becomes. The control plane is the real one
// (tests/daemon/control/control_plane.h); only the sd-bus marshalling is left
// out, and tests/dbus/dbus_test.cpp covers it on a real bus.
#include "dbus/bus_front.h"

#include "daemon/control/control.h"
#include "tests/daemon/control/control_plane.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tameflare::dbus {
namespace {

using control::Role;
using control::test_support::ControlPlane;
using nlohmann::json;

// The error name a call ends in, "" when it succeeds.
template <typename Call>
std::string error_of(Call&& call) {
    try {
        call();
    } catch (const std::exception& error) {
        return failure_of(error).name;
    }
    return "";
}

std::string error(std::string_view name) {
    return std::string(kErrorPrefix) + std::string(name);
}

class BusFrontTest : public ControlPlane {
protected:
    void SetUp() override {
        ControlPlane::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        front_.emplace(*control_, BusSources{&policy_, &queue_, nullptr});
        front_->load();
    }

    // Calls a method as `role` would over the bus.
    std::optional<BusValue> call(Role role, std::string member, std::vector<BusValue> args = {},
                                 ObjectKind object = ObjectKind::main, std::string label = "") {
        MethodCall method;
        method.object = object;
        method.label = std::move(label);
        method.member = std::move(member);
        method.args = CallArgs(std::move(args));
        method.sender = ":1.7";
        Identity identity{as(role), {}};
        return front_->call(method, identity);
    }

    // The events published since watch(), applied in order: what the bus would be sent.
    std::vector<Emission> applied() {
        std::vector<Emission> out;
        for (const auto& event : std::exchange(seen_, {})) {
            auto emissions = front_->apply(event);
            out.insert(out.end(), emissions.begin(), emissions.end());
        }
        return out;
    }

    std::optional<BusFront> front_;
};

std::string text(const std::optional<BusValue>& value) {
    return value ? std::get<std::string>(*value) : std::string("(empty)");
}

// --- methods -------------------------------------------------------------------

TEST(BusFrontMethods, EachMethodOfTheContractIsReadOrChangeAsItsMeaning) {
    // A caller whose process may have been replaced may still call the
    // reads; the changes are refused to it. A method missing here fails.
    for (const auto* member :
         {"GetStatus", "ListGateways", "GetGateway", "CheckConfig", "TestRequest", "ListAgents", "ListApprovals",
          "GetKillSwitch", "QueryTraffic", "QueryAudit", "VerifyAudit", "ListSecrets", "GetMetrics"}) {
        EXPECT_EQ(BusFront::effect_of(ObjectKind::main, member), Effect::read) << member;
    }
    for (const auto* member : {"SetEnforcement", "Reload", "StopAgent", "Launch", "Approve", "Deny", "SetKillSwitch",
                               "SetSecret", "RemoveSecret", "RotateVaultKey", "NoSuchMethod"}) {
        EXPECT_EQ(BusFront::effect_of(ObjectKind::main, member), Effect::change) << member;
    }
    EXPECT_EQ(BusFront::effect_of(ObjectKind::gateway, "SetEnforcement"), Effect::change);
    EXPECT_EQ(BusFront::effect_of(ObjectKind::agent, "Stop"), Effect::change);
    EXPECT_EQ(BusFront::effect_of(ObjectKind::approval, "Approve"), Effect::change);
    EXPECT_EQ(BusFront::effect_of(ObjectKind::approval, "Deny"), Effect::change);
}

TEST(BusFrontMethods, ErrorNamesComeFromTheControlCodesAndAnythingElseIsInternal) {
    EXPECT_EQ(error_name("unknown_approval"), "com.tameflare.Daemon1.Error.UnknownApproval");
    EXPECT_EQ(error_name("forbidden"), "com.tameflare.Daemon1.Error.Forbidden");
    EXPECT_EQ(error_name("--"), "com.tameflare.Daemon1.Error.Internal");
    const auto refused = failure_of(control::ControlError(control::ControlError::Kind::not_found, "unknown_gateway",
                                                          "no gateway x", "tf gateways lists them"));
    EXPECT_EQ(refused.name, "com.tameflare.Daemon1.Error.UnknownGateway");
    EXPECT_EQ(refused.message, "no gateway x (hint: tf gateways lists them)");
    const auto broken = failure_of(std::runtime_error("disk on fire"));
    EXPECT_EQ(broken.name, "com.tameflare.Daemon1.Error.Internal");
    EXPECT_EQ(broken.message, "internal error: disk on fire");
}

TEST_F(BusFrontTest, AViewerReadsButChangesNothingAndAnAdminChangesTheLevel) {
    const auto status = json::parse(text(call(Role::viewer, "GetStatus")));
    EXPECT_EQ(status["caller"]["role"], "viewer");
    EXPECT_EQ(json::parse(text(call(Role::viewer, "GetGateway", {std::string("one")})))["enforcement"], "full");

    EXPECT_EQ(error_of([&] { call(Role::none, "GetStatus"); }), error("Forbidden"));
    EXPECT_EQ(error_of([&] {
                  call(Role::viewer, "SetEnforcement", {std::string("one"), std::string("soft")});
              }),
              error("Forbidden"));
    EXPECT_EQ(error_of([&] {
                  call(Role::admin, "SetEnforcement", {std::string("one"), std::string("loud")});
              }),
              error("BadField"));
    EXPECT_FALSE(call(Role::admin, "SetEnforcement", {std::string("one"), std::string("soft")}));
    // The gateway's own object: the same operation, its name from the path.
    EXPECT_FALSE(call(Role::admin, "SetEnforcement", {std::string("monitor")}, ObjectKind::gateway, "one"));
    EXPECT_EQ(std::get<std::string>(front_->property(ObjectKind::gateway, "one", "EnforcementLevel", nullptr)),
              "monitor");
    EXPECT_EQ(error_of([&] { call(Role::viewer, "GetGateway", {std::string("nope")}); }), error("UnknownGateway"));
}

TEST_F(BusFrontTest, ArgumentsOfAnotherTypeAndUnknownMembersAreRefusedByName) {
    EXPECT_EQ(error_of([&] { call(Role::viewer, "GetGateway", {true}); }), error("BadArguments"));
    EXPECT_EQ(error_of([&] { call(Role::viewer, "GetGateway"); }), error("BadArguments"));
    EXPECT_EQ(error_of([&] { call(Role::owner, "Explode"); }), error("UnknownMethod"));
    EXPECT_EQ(error_of([&] { call(Role::owner, "Stop", {}, ObjectKind::gateway, "one"); }), error("UnknownMethod"));
    const Caller viewer = as(Role::viewer);
    EXPECT_EQ(error_of([&] { front_->property(ObjectKind::main, "", "Colour", &viewer); }), error("UnknownProperty"));
}

TEST_F(BusFrontTest, AReloadOfABrokenConfigurationIsRefusedWithTheCountTheFirstErrorAndAHint) {
    std::ofstream(dir_.path() / "gateways.d" / "broken.json") << R"({"name": "broken", "enforcement": "loud"})";
    try {
        call(Role::admin, "Reload");
        FAIL() << "a broken configuration was reloaded";
    } catch (const std::exception& refused) {
        const auto failure = failure_of(refused);
        EXPECT_EQ(failure.name, error("ConfigInvalid"));
        EXPECT_NE(failure.message.find("error(s) in the configuration; the running one stays in force: "),
                  std::string::npos)
            << failure.message;
        EXPECT_NE(failure.message.find("hint: CheckConfig lists every error"), std::string::npos) << failure.message;
    }
    const auto check = json::parse(text(call(Role::admin, "CheckConfig")));
    EXPECT_FALSE(check["valid"].get<bool>());
    EXPECT_FALSE(check["errors"].empty());
    // Still in force.
    EXPECT_EQ(front_->labels(ObjectKind::gateway, false), std::vector<std::string>{"one"});
}

TEST_F(BusFrontTest, TestRequestTakesAJsonObjectAndAnythingElseIsBadJson) {
    EXPECT_EQ(error_of([&] { call(Role::viewer, "TestRequest", {std::string("[1, 2")}); }), error("BadJson"));
    EXPECT_EQ(error_of([&] { call(Role::viewer, "TestRequest", {std::string("[1, 2]")}); }), error("BadJson"));
    // The role comes before the argument: a refused caller learns nothing of it.
    EXPECT_EQ(error_of([&] { call(Role::none, "TestRequest", {std::string("[1, 2")}); }), error("Forbidden"));
    const auto decided =
        json::parse(text(call(Role::viewer, "TestRequest",
                              {std::string(R"({"gateway": "one", "method": "POST", "url": "http://plain.test/x"})")})));
    EXPECT_EQ(decided.value("effect", ""), "require_approval") << decided.dump();
    EXPECT_EQ(decided.value("decision", ""), "pending_approval") << decided.dump();
}

TEST_F(BusFrontTest, LogQueriesTakeTheFiltersOfTheApiAndRefuseUnknownOnesAfterTheRole) {
    const StringPairs unknown{{"colour", "red"}};
    EXPECT_EQ(error_of([&] { call(Role::viewer, "QueryTraffic", {unknown}); }), error("BadField"));
    EXPECT_EQ(error_of([&] { call(Role::none, "QueryTraffic", {unknown}); }), error("Forbidden"));
    EXPECT_EQ(error_of([&] { call(Role::viewer, "QueryAudit", {StringPairs{{"limit", "many"}}}); }), error("BadField"));
    // JSON Lines: one record a line, filtered as asked.
    call(Role::admin, "SetEnforcement", {std::string("one"), std::string("soft")});
    call(Role::admin, "SetEnforcement", {std::string("one"), std::string("full")});
    std::istringstream audit(text(call(Role::viewer, "QueryAudit", {StringPairs{{"limit", "1"}}})));
    std::vector<json> records;
    for (std::string line; std::getline(audit, line);) records.push_back(json::parse(line));
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].value("subject", ""), "enforcement_overrides") << records[0].dump();
    EXPECT_EQ(records[0]["details"], (json{{"one", "full"}})) << records[0].dump();
}

TEST_F(BusFrontTest, HeldRequestsAreListedAsRowsAndAnsweredThroughTheirObjectWithTheCallerAsActor) {
    hold("a1");
    const auto listed = call(Role::viewer, "ListApprovals");
    ASSERT_TRUE(listed);
    const auto& rows = std::get<std::vector<ApprovalRow>>(*listed);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].id, "a1");
    EXPECT_EQ(rows[0].gateway, "one");
    EXPECT_EQ(rows[0].agent, "agent-1");
    EXPECT_EQ(rows[0].action, "http.post");
    EXPECT_EQ(rows[0].risk, "medium");
    EXPECT_EQ(json::parse(rows[0].parameters), (json{{"path", "/x"}}));
    EXPECT_EQ(signature_of(*listed), "a(sssssst)");

    EXPECT_EQ(error_of([&] { call(Role::viewer, "Approve", {std::string("ok")}, ObjectKind::approval, "a1"); }),
              error("Forbidden"));
    EXPECT_FALSE(call(Role::member, "Approve", {std::string("looks fine")}, ObjectKind::approval, "a1"));
    ASSERT_EQ(answers_.count("a1"), 1u);
    EXPECT_TRUE(answers_["a1"].approved);
    EXPECT_EQ(answers_["a1"].note, "looks fine");
    EXPECT_EQ(answers_["a1"].actor, as(Role::member).describe());
    EXPECT_EQ(error_of([&] {
                  call(Role::member, "Deny", {std::string("a1"), std::string("")});
              }),
              error("UnknownApproval"));
}

// --- properties ----------------------------------------------------------------

TEST_F(BusFrontTest, PropertiesAreAuthorizedForACallerAndReadFromTheEventsForTheDaemonsOwnEmissions) {
    watch();
    const Caller viewer = as(Role::viewer);
    const Caller nobody = as(Role::none);
    EXPECT_EQ(std::get<bool>(front_->property(ObjectKind::main, "", "KillSwitch", &viewer)), false);
    EXPECT_EQ(error_of([&] { front_->property(ObjectKind::main, "", "KillSwitch", &nobody); }), error("Forbidden"));

    EXPECT_FALSE(call(Role::owner, "SetKillSwitch", {true, std::string("gateway:one"), std::string("incident")}));
    EXPECT_EQ(std::get<std::vector<std::string>>(front_->property(ObjectKind::main, "", "KillSwitchScope", &viewer)),
              std::vector<std::string>{"gateway:one"});
    // The own emission knows it only once the event is applied.
    EXPECT_EQ(std::get<bool>(front_->property(ObjectKind::main, "", "KillSwitch", nullptr)), false);
    const auto emissions = applied();
    ASSERT_EQ(emissions.size(), 2u);
    EXPECT_EQ(emissions[0].member, "KillSwitchChanged");
    EXPECT_EQ(emissions[0].args, (std::vector<BusValue>{true, std::string("incident"), as(Role::owner).describe()}));
    EXPECT_EQ(emissions[1].kind, Emission::Kind::changed);
    EXPECT_EQ(emissions[1].properties, (std::vector<std::string>{"KillSwitch", "KillSwitchScope"}));
    EXPECT_EQ(std::get<std::vector<std::string>>(front_->property(ObjectKind::main, "", "KillSwitchScope", nullptr)),
              std::vector<std::string>{"gateway:one"});

    hold("a2");
    EXPECT_EQ(std::get<std::string>(front_->property(ObjectKind::approval, "a2", "Action", &viewer)), "http.post");
    EXPECT_EQ(error_of([&] { front_->property(ObjectKind::approval, "a2", "Action", &nobody); }), error("Forbidden"));
    EXPECT_EQ(error_of([&] { front_->property(ObjectKind::approval, "zz", "Action", &viewer); }),
              error("UnknownApproval"));
    EXPECT_EQ(std::get<std::vector<std::string>>(front_->property(ObjectKind::gateway, "one", "Connectors", &viewer)),
              std::vector<std::string>{"site"});
}

// --- events ----------------------------------------------------------------------

TEST_F(BusFrontTest, AHeldRequestBecomesASignalAnObjectAndACountAndGoesWhenAnswered) {
    watch();
    hold("a3");
    auto emissions = applied();
    ASSERT_EQ(emissions.size(), 3u);
    EXPECT_EQ(emissions[0].kind, Emission::Kind::signal);
    EXPECT_EQ(emissions[0].path, kObjectPath);
    EXPECT_EQ(emissions[0].member, "ApprovalRequested");
    EXPECT_TRUE(emissions[0].destination.empty());
    ASSERT_EQ(emissions[0].args.size(), 6u);
    EXPECT_EQ(emissions[0].args[0], BusValue{std::string("a3")});
    EXPECT_EQ(emissions[0].args[3], BusValue{std::string("http.post")});
    EXPECT_EQ(json::parse(std::get<std::string>(emissions[0].args[5])), (json{{"path", "/x"}}));
    EXPECT_EQ(emissions[1].kind, Emission::Kind::added);
    EXPECT_EQ(emissions[1].path, std::string(kApprovalPrefix) + "/a3");
    EXPECT_EQ(emissions[2].properties, std::vector<std::string>{"PendingApprovals"});
    EXPECT_EQ(std::get<std::uint32_t>(front_->property(ObjectKind::main, "", "PendingApprovals", nullptr)), 1u);
    EXPECT_EQ(front_->labels(ObjectKind::approval, true), std::vector<std::string>{"a3"});
    EXPECT_EQ(std::get<std::string>(front_->property(ObjectKind::approval, "a3", "Risk", nullptr)), "medium");

    call(Role::member, "Deny", {std::string("a3"), std::string("")});
    emissions = applied();
    ASSERT_EQ(emissions.size(), 3u);
    EXPECT_EQ(emissions[0].member, "ApprovalResolved");
    EXPECT_EQ(emissions[0].args[1], BusValue{false});
    EXPECT_EQ(emissions[1].kind, Emission::Kind::removed);
    EXPECT_EQ(emissions[1].path, std::string(kApprovalPrefix) + "/a3");
    EXPECT_TRUE(front_->labels(ObjectKind::approval, true).empty());
}

TEST_F(BusFrontTest, AnExpiredApprovalSaysSoAndAnUnknownOneChangesNoObject) {
    const auto emissions = front_->apply(
        control::Event{1, "approval.resolved", {{"id", "never-seen"}, {"approved", false}, {"expired", true}}});
    ASSERT_EQ(emissions.size(), 1u);
    EXPECT_EQ(emissions[0].args,
              (std::vector<BusValue>{std::string("never-seen"), false, std::string(), std::string("expired")}));
}

TEST_F(BusFrontTest, AnAgentAppearsAndGoesWithItsEventsAndOnlyItsLauncherHearsExited) {
    const json started{{"id", "ag-1"}, {"gateway", "one"}, {"isolation", "shared"}, {"pid", 4242}, {"uid", 1000}};
    auto emissions = front_->apply(control::Event{1, "agent.started", started});
    ASSERT_EQ(emissions.size(), 3u);
    EXPECT_EQ(emissions[0].member, "AgentStarted");
    EXPECT_EQ(emissions[0].args, (std::vector<BusValue>{std::string("ag-1"), std::string("one"), std::uint32_t{1000},
                                                        std::uint32_t{4242}}));
    EXPECT_EQ(emissions[1].path, std::string(kAgentPrefix) + "/ag_2d1");
    EXPECT_EQ(std::get<std::uint32_t>(front_->property(ObjectKind::agent, "ag-1", "Pid", nullptr)), 4242u);
    EXPECT_EQ(std::get<std::uint32_t>(front_->property(ObjectKind::main, "", "Agents", nullptr)), 1u);

    json exited = started;
    exited["status"] = 3;
    emissions = front_->apply(control::Event{2, "agent.exited", exited});
    // No launcher over D-Bus: no directed Exited; the broadcast, the object, the count.
    ASSERT_EQ(emissions.size(), 3u);
    EXPECT_EQ(emissions[0].args, (std::vector<BusValue>{std::string("ag-1"), std::int32_t{3}}));
    EXPECT_EQ(emissions[1].kind, Emission::Kind::removed);
    EXPECT_EQ(std::get<std::uint32_t>(front_->property(ObjectKind::main, "", "Agents", nullptr)), 0u);
    // Launch itself needs kernel enforcement, which this control plane lacks.
    EXPECT_EQ(error_of([&] {
                  call(Role::owner, "Launch",
                       {std::string("one"), std::string(""), std::string(""), std::vector<std::string>{"/bin/true"},
                        std::vector<std::string>{}, BorrowedFd{0}, BorrowedFd{1}, BorrowedFd{2}, BorrowedFd{0}});
              }),
              error("Unavailable"));
}

TEST_F(BusFrontTest, AReloadAddsAndRemovesGatewayObjects) {
    std::ofstream(dir_.path() / "gateways.d" / "two.json")
        << R"({"name": "two", "enforcement": "monitor", "connectors": {}})";
    watch();
    call(Role::admin, "Reload");
    const auto emissions = applied();
    std::vector<std::string> added;
    for (const auto& emission : emissions) {
        if (emission.kind == Emission::Kind::added) added.push_back(emission.path);
    }
    EXPECT_EQ(added, std::vector<std::string>{std::string(kGatewayPrefix) + "/two"});
    EXPECT_EQ(front_->labels(ObjectKind::gateway, true), (std::vector<std::string>{"one", "two"}));
}

}  // namespace
}  // namespace tameflare::dbus
