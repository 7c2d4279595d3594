// The one authorizer (daemon/control/authorizer.h) for what the control
// plane's matrix (control_test.cpp) does not reach: who may launch agents on a
// gateway and who may put a unit under enforcement, as the launch socket and
// D-Bus ask it. Users and groups are real NSS entries every Debian system has.
#include "daemon/control/authorizer.h"

#include <grp.h>
#include <pwd.h>

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace tameflare::control {
namespace {

std::optional<gid_t> gid_of(const char* name) {
    const group* entry = ::getgrnam(name);
    if (entry == nullptr) return std::nullopt;
    return entry->gr_gid;
}

Caller nobody_with(std::vector<gid_t> groups = {}) {
    Caller caller;
    caller.uid = 65534;
    caller.gid = 65534;
    caller.groups = std::move(groups);
    caller.cgroup = "/user.slice/user-65534.slice/session-1.scope";
    return caller;
}

// Agents are the callers whose cgroup is under /agents (and an unknown one).
const Authorizer kAuthorizer{
    RoleGroups{}, [](const Caller& caller) { return caller.cgroup.empty() || caller.cgroup.starts_with("/agents/"); }};

struct Refusal {
    std::string code;
    std::string message;
};

template <class Call>
std::optional<Refusal> refusal_of(Call call) {
    try {
        call();
    } catch (const ControlError& error) {
        EXPECT_EQ(error.kind(), ControlError::Kind::forbidden);
        EXPECT_FALSE(error.hint().empty()) << error.what();
        return Refusal{error.code(), error.what()};
    }
    return std::nullopt;
}

TEST(Authorizer, TheGatewaysLaunchListNamesWhoMayLaunchAndRootMayEverywhere) {
    const auto staff = gid_of("staff");
    if (!staff || ::getpwnam("nobody") == nullptr) GTEST_SKIP() << "no group staff or user nobody on this system";
    policy::Gateway gateway;
    gateway.name = "ci";
    // Nobody listed: only root.
    Caller root = nobody_with();
    root.uid = 0;
    EXPECT_FALSE(refusal_of([&] { kAuthorizer.authorize_launch(root, &gateway); }));
    const auto refused = refusal_of([&] { kAuthorizer.authorize_launch(nobody_with(), &gateway); });
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->code, "launch_refused");
    EXPECT_EQ(refused->message, "user 65534 may not launch agents on gateway ci");
    // By user name.
    gateway.launch_users = {"nobody"};
    EXPECT_FALSE(refusal_of([&] { kAuthorizer.authorize_launch(nobody_with(), &gateway); }));
    // By a supplementary group, not by a group the caller is not in.
    gateway.launch_users.clear();
    gateway.launch_groups = {"staff", "no-such-group-here"};
    EXPECT_FALSE(refusal_of([&] { kAuthorizer.authorize_launch(nobody_with({*staff}), &gateway); }));
    EXPECT_TRUE(refusal_of([&] { kAuthorizer.authorize_launch(nobody_with(), &gateway); }));
    EXPECT_TRUE(may_launch(nobody_with({*staff}), gateway));
    EXPECT_FALSE(may_launch(nobody_with(), gateway));
}

TEST(Authorizer, AnAgentIsRefusedALaunchBeforeItLearnsWhetherTheGatewayExists) {
    policy::Gateway gateway;
    gateway.name = "ci";
    gateway.launch_users = {"nobody"};
    for (const std::string cgroup : {"/agents/ci-1", ""}) {
        Caller agent = nobody_with();
        agent.cgroup = cgroup;
        for (const policy::Gateway* which : std::initializer_list<const policy::Gateway*>{&gateway, nullptr}) {
            const auto refused = refusal_of([&] { kAuthorizer.authorize_launch(agent, which); });
            ASSERT_TRUE(refused) << cgroup;
            EXPECT_EQ(refused->code, "agent_caller");
            EXPECT_EQ(refused->message, "agents cannot launch agents");
        }
        agent.uid = 0;  // a root agent is still an agent
        EXPECT_TRUE(refusal_of([&] { kAuthorizer.authorize_launch(agent, &gateway); }));
    }
    // Outside an agent, an unknown gateway is for the caller to report.
    EXPECT_FALSE(refusal_of([&] { kAuthorizer.authorize_launch(nobody_with(), nullptr); }));
}

TEST(Authorizer, OnlyRootOutsideEveryAgentChangesEnforcement) {
    Caller root = nobody_with();
    root.uid = 0;
    EXPECT_FALSE(refusal_of([&] { kAuthorizer.authorize_enforcement(root, "put a cgroup under enforcement"); }));
    const auto user = refusal_of([&] { kAuthorizer.authorize_enforcement(nobody_with(), "release a cgroup"); });
    ASSERT_TRUE(user);
    EXPECT_EQ(user->message, "only root may release a cgroup");
    root.cgroup = "/agents/ci-1";
    const auto agent = refusal_of([&] { kAuthorizer.authorize_enforcement(root, "release a cgroup"); });
    ASSERT_TRUE(agent);
    EXPECT_EQ(agent->code, "agent_caller");
}

}  // namespace
}  // namespace tameflare::control
