// tf and tameflared as a user runs them: exit codes, output, and the daemon's
// reload on SIGHUP.
#include "support/loopback.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;

const std::string kExampleConfig = std::string(TF_SOURCE_DIR) + "/examples/tameflared.json";

TEST(Tf, PolicyTestPrintsTheDecisionAndItsTrace) {
    const auto result = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "dev-bot",
                             "PUT https://api.github.com/repos/o/r/pulls/7/merge"});
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("decision:   pending_approval"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("action:     github.pr.merge"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("permission"), std::string::npos) << result.out;
}

TEST(Tf, PolicyTestJsonCarriesParametersFromTheBody) {
    const auto result = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "payments-bot", "--json",
                             "--body", "amount=25000&currency=eur", "POST https://api.stripe.com/v1/transfers"});
    ASSERT_EQ(result.status, 0) << result.err;
    const auto json = nlohmann::json::parse(result.out);
    EXPECT_EQ(json["decision"], "pending_approval");
    EXPECT_EQ(json["actions"][0]["action"], "stripe.transfer.create");
    EXPECT_EQ(json["actions"][0]["parameters"]["amount"], "25000");
    EXPECT_EQ(json["reason"], "amounts over 100.00 need a human");
    EXPECT_EQ(json["approval_timeout_seconds"], 900);
}

TEST(Tf, ExitCodeOptionFailsWhenTheRequestIsNotForwarded) {
    const auto denied = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "dev-bot", "--exit-code",
                             "DELETE https://api.github.com/repos/o/r"});
    EXPECT_EQ(denied.status, 1);
    const auto allowed = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "dev-bot", "--exit-code",
                              "GET https://api.github.com/repos/o/r"});
    EXPECT_EQ(allowed.status, 0) << allowed.out;
}

TEST(Tf, RequestsFileGivesATable) {
    const auto result = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "dev-bot", "--requests",
                             std::string(TF_SOURCE_DIR) + "/examples/requests.txt"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("pending_approval"), std::string::npos);
    EXPECT_NE(result.out.find("github.branch.delete"), std::string::npos);
    EXPECT_NE(result.out.find("no connector of gateway dev-bot serves this host"), std::string::npos);
}

TEST(Tf, UsageErrorsExitTwoAndSayWhatIsMissing) {
    const auto no_gateway = run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "GET https://api.github.com/"});
    EXPECT_EQ(no_gateway.status, 2);
    EXPECT_NE(no_gateway.err.find("--gateway"), std::string::npos);
    const auto unknown_gateway =
        run({TF_BINARY, "policy", "test", "-c", kExampleConfig, "--gateway", "nope", "GET https://api.github.com/"});
    EXPECT_EQ(unknown_gateway.status, 2);
    EXPECT_NE(unknown_gateway.err.find(
                  "configured: aider, ci, claude-code, codex, dev-bot, github-runner, gitlab-runner, payments-bot"),
              std::string::npos)
        << unknown_gateway.err;
    EXPECT_EQ(run({TF_BINARY, "frobnicate"}).status, 2);
}

TEST(Tf, PolicySuggestRefusesBadArgumentsAndSaysWhy) {
    const auto no_gateway = run({TF_BINARY, "policy", "suggest", "-c", kExampleConfig});
    EXPECT_EQ(no_gateway.status, 2);
    EXPECT_NE(no_gateway.err.find("--gateway G is required"), std::string::npos) << no_gateway.err;
    const auto force = run({TF_BINARY, "policy", "suggest", "-c", kExampleConfig, "--gateway", "ci", "--force"});
    EXPECT_EQ(force.status, 2);
    EXPECT_NE(force.err.find("--force goes with --output FILE"), std::string::npos) << force.err;
    const auto since =
        run({TF_BINARY, "policy", "suggest", "-c", kExampleConfig, "--gateway", "ci", "--since", "yesterday"});
    EXPECT_EQ(since.status, 2);
    EXPECT_NE(since.err.find("--since yesterday is neither an age"), std::string::npos) << since.err;
    const auto unknown = run({TF_BINARY, "policy", "suggest", "-c", kExampleConfig, "--gateway", "nope"});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_NE(unknown.err.find("the configuration has no gateway nope"), std::string::npos) << unknown.err;
    // The traffic comes from tameflared: none at this socket.
    const auto unreachable = run(
        {TF_BINARY, "policy", "suggest", "-c", kExampleConfig, "--gateway", "ci", "--socket", "/nonexistent/api.sock"});
    EXPECT_EQ(unreachable.status, 3) << unreachable.err;
}

TEST(Tf, ConnectorsListAndShow) {
    const auto list = run({TF_BINARY, "connectors", "list", "-c", kExampleConfig});
    ASSERT_EQ(list.status, 0) << list.err;
    for (const char* name : {"github", "openai", "anthropic", "stripe", "slack", "mcp", "webhook", "http"}) {
        EXPECT_NE(list.out.find(name), std::string::npos) << name;
    }
    const auto show = run({TF_BINARY, "connectors", "show", "github", "-c", kExampleConfig});
    ASSERT_EQ(show.status, 0) << show.err;
    EXPECT_NE(show.out.find("/repos/{owner}/{repo}/pulls/{number}/merge"), std::string::npos);
}

class Daemon : public ::testing::Test {
protected:
    void SetUp() override {
        fs::create_directories(root_ / "gateways.d");
        // Listeners on ports the kernel picks, state in the temporary directory.
        std::ofstream(root_ / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run", "agents": {"enabled": false},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false, "allowed_upstreams": ["127.0.0.1"],
                            "hosts": {"plain.test": ["127.0.0.1"]}}})";
        write_gateway("one", R"({"name": "one", "connectors": {"github": {"preset": "read_only"}}})");
    }
    void write_gateway(const std::string& file, const std::string& text) {
        std::ofstream(root_ / "gateways.d" / (file + ".json")) << text;
    }
    std::string config() const { return (root_ / "tameflared.json").string(); }
    testing::TempDir temp_{"tf-daemon"};
    const fs::path root_ = temp_.path();
};

TEST_F(Daemon, CheckConfigAcceptsAGoodConfigurationAndExplainsABadOne) {
    const auto good = run({TAMEFLARED_BINARY, "--check-config", "-c", config()});
    EXPECT_EQ(good.status, 0) << good.err;
    EXPECT_NE(good.out.find("configuration OK: 17 connectors, 1 gateways"), std::string::npos) << good.out;

    write_gateway("two", R"({"name": "two", "enforcment": "soft", "connectors": {"githb": {}}})");
    const auto bad = run({TAMEFLARED_BINARY, "--check-config", "-c", config()});
    EXPECT_EQ(bad.status, 1);
    const std::string file = (root_ / "gateways.d/two.json").string();
    EXPECT_NE(bad.err.find(file + ": /enforcment: unknown field \"enforcment\" (hint: did you mean \"enforcement\"?)"),
              std::string::npos)
        << bad.err;
    EXPECT_NE(bad.err.find(file + ": /connectors/githb: unknown connector \"githb\" (hint: did you mean \"github\"?)"),
              std::string::npos)
        << bad.err;
    EXPECT_NE(bad.err.find("2 error(s)"), std::string::npos);
}

TEST_F(Daemon, RefusesToStartWithABadConfiguration) {
    write_gateway("two", "{ not json");
    const auto result = run({TAMEFLARED_BINARY, "-c", config()});
    EXPECT_EQ(result.status, 1);
    EXPECT_NE(result.err.find("refusing to start"), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("CONFIG_FILE=" + (root_ / "gateways.d/two.json").string()), std::string::npos)
        << result.err;
}

TEST_F(Daemon, SighupReloadsAGoodConfigurationAndKeepsTheRunningOneOnABadOne) {
    Subprocess daemon({TAMEFLARED_BINARY, "-c", config()});
    ASSERT_TRUE(daemon.wait_for_stderr("tameflared started: 17 connectors, 1 gateways")) << daemon.err();

    write_gateway(
        "two",
        R"({"name": "two", "connectors": {"github": {"rules": [{"action": "github.pr.mrge", "decision": "allow"}]}}})");
    std::size_t mark = daemon.err().size();
    daemon.signal(SIGHUP);
    ASSERT_TRUE(daemon.wait_for_stderr("reload refused", mark)) << daemon.err();
    EXPECT_NE(daemon.err().find("did you mean", mark), std::string::npos) << daemon.err();

    write_gateway(
        "two",
        R"({"name": "two", "connectors": {"github": {"rules": [{"action": "github.pr.merge", "decision": "allow"}]}}})");
    mark = daemon.err().size();
    daemon.signal(SIGHUP);
    ASSERT_TRUE(daemon.wait_for_stderr("configuration reloaded: 17 connectors, 2 gateways", mark)) << daemon.err();

    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait(), 0);
    EXPECT_NE(daemon.err().find("tameflared stopping"), std::string::npos);
}

TEST_F(Daemon, ProxiesThroughTheExplicitListenerAndLogsEachRequest) {
    // printf %s token | sha256sum
    write_gateway("one", R"({"name": "one", "proxy_token_sha256":
        "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0",
        "connectors": {"site": {"connector": "http", "domains": ["plain.test"], "preset": "read_only"}}})");
    LoopbackListener upstream;
    Subprocess daemon({TAMEFLARED_BINARY, "-c", config()});
    ASSERT_TRUE(daemon.wait_for_stderr("tameflared started")) << daemon.err();
    EXPECT_TRUE(fs::exists(root_ / "state/ca/ca.crt"));
    // Idle memory: the whole daemon, with its policy loaded and listeners up.
    // Private_Dirty is what the daemon itself wrote (heap, stacks, tables);
    // the rest of the resident set is the binary's and libraries' clean
    // pages, shared and reclaimable, larger in an unoptimized build.
    long rss_kib = 0;
    long dirty_kib = 0;
    std::ifstream status("/proc/" + std::to_string(daemon.pid()) + "/smaps_rollup");
    for (std::string line; std::getline(status, line);) {
        if (line.starts_with("Rss:")) rss_kib = std::stol(line.substr(4));
        if (line.starts_with("Private_Dirty:")) dirty_kib = std::stol(line.substr(14));
    }
    std::printf("idle tameflared: %ld KiB resident, %ld KiB private dirty\n", rss_kib, dirty_kib);
    EXPECT_GT(rss_kib, 0);
#ifndef __SANITIZE_ADDRESS__  // the sanitizer's shadow memory is not the daemon's
    EXPECT_LT(dirty_kib, 8 * 1024);
    EXPECT_LT(rss_kib, 20 * 1024);  // the original gateway's lower bound
#endif
    const auto at = daemon.err().find("EXPLICIT_LISTEN=");
    ASSERT_NE(at, std::string::npos) << daemon.err();
    const std::string listen = daemon.err().substr(at + 16, daemon.err().find_first_of(" \n", at) - at - 16);

    // A one-shot upstream on the loopback listener.
    std::thread server([&] {
        const int fd = upstream.accept();
        if (fd < 0) return;
        char buffer[4096];
        (void)::recv(fd, buffer, sizeof buffer, 0);
        const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        (void)::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
        ::close(fd);
    });
    const auto allowed = run({"/usr/bin/env", "curl", "-q", "-sS", "--max-time", "10", "-x",
                              "http://one:token@" + listen, "http://plain.test:" + upstream.port_text() + "/x"});
    server.join();
    EXPECT_EQ(allowed.status, 0) << allowed.err;
    EXPECT_EQ(allowed.out, "ok");
    const auto denied =
        run({"/usr/bin/env", "curl", "-q", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-x",
             "http://one:token@" + listen, "-X", "DELETE", "http://plain.test:" + upstream.port_text() + "/x"});
    EXPECT_EQ(denied.out, "403");
    // The journal's fields (daemon/traffic_journal.h): DECISION= what happened, OUTCOME= the log's label.
    EXPECT_TRUE(daemon.wait_for_stderr("OUTCOME=denied")) << daemon.err();
    EXPECT_NE(daemon.err().find("DECISION=deny "), std::string::npos) << daemon.err();
    EXPECT_NE(daemon.err().find("OUTCOME=allowed"), std::string::npos) << daemon.err();
    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait(), 0);
}

}  // namespace
}  // namespace tameflare::testing
