// What an agent's environment gains from its gateway's connectors: key
// placeholders for SDKs, and git configuration that turns SSH remotes into
// HTTPS ones; the latter proven with the real git.
#include "daemon/agent_environment.h"
#include "policy/test_support.h"
#include "support/subprocess.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tameflare::daemon {
namespace {

std::string value_of(const std::vector<std::string>& env, const std::string& name) {
    std::string found = "<unset>";
    int seen = 0;
    for (const auto& entry : env) {
        if (entry.rfind(name + "=", 0) == 0) {
            found = entry.substr(name.size() + 1);
            ++seen;
        }
    }
    EXPECT_LE(seen, 1) << name << " is set more than once";
    return found;
}

const policy::Gateway& gateway_of(const std::shared_ptr<const policy::Config>& config) {
    return *config->gateway("g");
}

TEST(AgentEnvironment, ConnectorsWithAVaultCredentialGetAPlaceholderInTheirSdksVariables) {
    const auto config = policy::testing::load_or_fail({R"({"name": "g", "connectors": {
        "openai": {"credential": "openai-key", "preset": "allow_all"},
        "anthropic": {"credential": "anthropic-key", "preset": "allow_all"},
        "stripe": {"preset": "read_only"}}})"});
    ASSERT_TRUE(config);
    // The caller's own key (a gateway that does not strip it) is replaced: the agent never holds a real one.
    std::vector<std::string> env{"PATH=/usr/bin", "OPENAI_API_KEY=sk-the-users-own"};
    add_connector_environment(gateway_of(config), env);
    EXPECT_EQ(value_of(env, "OPENAI_API_KEY"), "tameflare-placeholder-openai");
    EXPECT_EQ(value_of(env, "ANTHROPIC_API_KEY"), "tameflare-placeholder-anthropic");
    // No vault credential, nothing for the proxy to put in its place: no placeholder.
    EXPECT_EQ(value_of(env, "STRIPE_API_KEY"), "<unset>");
    EXPECT_EQ(value_of(env, "PATH"), "/usr/bin");
    // Neither connector lists SSH remotes.
    EXPECT_EQ(value_of(env, "GIT_CONFIG_COUNT"), "<unset>");
}

TEST(AgentEnvironment, GithubSshRemotesAreRewrittenAfterTheCallersOwnGitConfiguration) {
    const auto config = policy::testing::load_or_fail(
        {R"({"name": "g", "connectors": {"github": {"credential": "gh", "preset": "read_only"}}})"});
    ASSERT_TRUE(config);
    std::vector<std::string> env{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=user.name", "GIT_CONFIG_VALUE_0=agent"};
    add_connector_environment(gateway_of(config), env);
    EXPECT_EQ(value_of(env, "GIT_CONFIG_COUNT"), "3");
    EXPECT_EQ(value_of(env, "GIT_CONFIG_KEY_0"), "user.name");
    EXPECT_EQ(value_of(env, "GIT_CONFIG_KEY_1"), "url.https://github.com/.insteadOf");
    EXPECT_EQ(value_of(env, "GIT_CONFIG_VALUE_1"), "git@github.com:");
    EXPECT_EQ(value_of(env, "GIT_CONFIG_KEY_2"), "url.https://github.com/.insteadOf");
    EXPECT_EQ(value_of(env, "GIT_CONFIG_VALUE_2"), "ssh://git@github.com/");
    EXPECT_EQ(value_of(env, "GITHUB_TOKEN"), "tameflare-placeholder-github");
    EXPECT_EQ(value_of(env, "GH_TOKEN"), "tameflare-placeholder-github");

    // A GitHub Enterprise instance serves its own host, not github.com: no rewrite of github.com for it.
    const auto enterprise = policy::testing::load_or_fail({R"({"name": "g", "connectors": {
        "ghe": {"connector": "github", "base_url": "https://ghe.example.com/api/v3", "preset": "read_only"}}})"});
    ASSERT_TRUE(enterprise);
    std::vector<std::string> none;
    add_connector_environment(gateway_of(enterprise), none);
    EXPECT_EQ(value_of(none, "GIT_CONFIG_COUNT"), "<unset>");
}

// git itself, given the environment, takes git@github.com:octo/hello.git over
// HTTPS (here to a proxy port nobody listens on, so it goes nowhere); without
// it, git runs its SSH command. Nothing leaves loopback.
TEST(AgentEnvironment, GitTakesTheRewrittenSshRemoteOverHttps) {
    const auto config = policy::testing::load_or_fail(
        {R"({"name": "g", "connectors": {"github": {"credential": "gh", "preset": "read_only"}}})"});
    ASSERT_TRUE(config);
    std::vector<std::string> env{"PATH=/usr/bin:/bin",
                                 "HOME=/nonexistent",
                                 "GIT_SSH_COMMAND=echo ssh-was-used >&2; false",
                                 "GIT_TERMINAL_PROMPT=0",
                                 "https_proxy=http://127.0.0.1:9",
                                 "GIT_CONFIG_NOSYSTEM=1"};
    std::vector<std::string> without{"/usr/bin/env", "-i"};
    without.insert(without.end(), env.begin(), env.end());
    without.insert(without.end(), {"git", "ls-remote", "git@github.com:octo/hello.git"});
    const auto ssh = testing::run(without);
    EXPECT_NE(ssh.status, 0);
    EXPECT_NE(ssh.err.find("ssh-was-used"), std::string::npos) << ssh.err;

    add_connector_environment(gateway_of(config), env);
    for (const std::string remote : {"git@github.com:octo/hello.git", "ssh://git@github.com/octo/hello.git"}) {
        std::vector<std::string> with{"/usr/bin/env", "-i"};
        with.insert(with.end(), env.begin(), env.end());
        with.insert(with.end(), {"git", "ls-remote", remote});
        const auto https = testing::run(with);
        EXPECT_NE(https.status, 0);
        EXPECT_EQ(https.err.find("ssh-was-used"), std::string::npos) << https.err;
        EXPECT_NE(https.err.find("https://github.com/octo/hello.git"), std::string::npos) << https.err;
    }
}

}  // namespace
}  // namespace tameflare::daemon
