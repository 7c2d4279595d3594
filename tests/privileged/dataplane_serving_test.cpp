// The proxy served by the real tameflare-dataplane, driven the way the
// supervisor drives it (daemon/dataplane/remote_plane.h): the supervisor binds
// the listener and passes it, the data plane (nobody here, no capability, its
// seccomp filter and Landlock domain in force) parses the agent's HTTPS,
// gets its leaf signed, its credential and its commit answered over the
// channel. Killed under traffic it fails closed: the held request is
// withdrawn, the upstream sees nothing, and another serves the same port.
// Root only; skips with the reason otherwise.
#include "daemon/dataplane/remote_plane.h"
#include "daemon/proxy/approvals.h"
#include "netns/cgroup.h"
#include "netns/namespaces.h"
#include "policy/config.h"
#include "tests/support/files.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"
#include "tests/support/test_upstream.h"

#include <openssl/evp.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::dataplane {
namespace {

using namespace std::chrono_literals;

constexpr const char* kToken = "s3cret-token";
constexpr std::uint64_t kAgent = 7;  // the agent's registration (its cgroup id, in tameflared)

using testing::proc_status;
using testing::read_file;
using testing::sha256_hex;

class KeptTraffic : public proxy::TrafficSink {
public:
    void record(proxy::TrafficRecord record) override {
        std::lock_guard lock(mutex_);
        records_.push_back(std::move(record));
    }
    void commit(proxy::TrafficRecord record, std::function<void(std::string)> done) override {
        {
            std::lock_guard lock(mutex_);
            committed_.push_back(record.request_id);
        }
        done("");
    }
    std::vector<proxy::TrafficRecord> records() const {
        std::lock_guard lock(mutex_);
        return records_;
    }
    std::size_t committed() const {
        std::lock_guard lock(mutex_);
        return committed_.size();
    }

private:
    mutable std::mutex mutex_;
    std::vector<proxy::TrafficRecord> records_;
    std::vector<std::string> committed_;
};

class Vault : public proxy::CredentialSource {
public:
    std::optional<std::string> credential(std::string_view name) override {
        if (name == "github-pat") return "vault-github-secret";
        return std::nullopt;
    }
};

class DataPlaneServingTest : public ::testing::Test {
protected:
    DataPlaneServingTest()
        : test_ca_(dir_.path()),
          github_({.address = "127.0.0.1", .tls = test_ca_.issue({"api.github.com"}, {}, dir_.path(), "github")}) {}

    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "starting the data plane as its own user needs root";
        cgroup_ = netns::cgroup2_mount() / ("tf-dataplane-serving-" + std::to_string(::getpid()));
        ca_ = proxy::CertificateAuthority::load_or_create(dir_.path() / "state");
        std::ofstream(dir_.path() / "proxy-ca.crt") << ca_->certificate_pem();
        const nlohmann::json gateway = {
            {"name", "dev"},
            {"approval_timeout_seconds", 60},
            {"proxy_token_sha256", sha256_hex(kToken)},
            {"connectors",
             {{"github",
               {{"credential", "github-pat"},
                {"preset", "read_only"},
                {"rules", {{{"action", "github.pr.merge"}, {"decision", "require_approval"}}}}}}}}};
        auto result = policy::load_config(
            {{"github.json", read_file(std::filesystem::path(TF_SOURCE_DIR) / "connectors" / "github.json")}},
            {{"dev.json", gateway.dump()}});
        ASSERT_TRUE(result.ok()) << policy::format_errors(result.errors);
        config_.publish(result.config);

        RemoteDataPlaneOptions options;
        options.process.binary = TAMEFLARE_DATAPLANE_BINARY;
        options.process.cgroup = cgroup_;
        options.process.readable = {"/etc/ssl", "/usr/lib", "/lib", "/etc/hosts"};
        options.proxy.explicit_listen = Endpoint::parse("127.0.0.1:0");
        options.proxy.threads = 2;
        options.proxy.system_resolver = false;
        options.proxy.hosts["api.github.com"] = {*IpAddress::parse("127.0.0.1")};
        options.proxy.allowed_upstreams = {*Cidr::parse("127.0.0.0/8")};
        // In a directory the data plane's user may not enter: it gets the file's descriptor.
        options.proxy.upstream_ca_file = test_ca_.ca_file().string();
        options.config = &config_;
        // No origins map here: the data plane asks over the channel, and this
        // answers as the map would for connections from 127.0.0.1 (agent kAgent).
        options.host = {&traffic_, &queue_, &vault_, ca_.get(),
                        [this](std::uint64_t, const Endpoint& client) -> std::optional<bpf::Origin> {
                            ++origin_questions_;
                            if (client.address != *IpAddress::parse("127.0.0.1")) return std::nullopt;
                            return bpf::Origin{Endpoint{*IpAddress::parse("127.0.0.1"), github_.port()}, kAgent};
                        }};
        options.on_lost = [this](const std::string& why) {
            queue_.deny_if([](const proxy::ApprovalRequest&) { return true; }, "its data plane ended");
            lost_.set_value(why);
        };
        plane_.emplace(std::move(options));
        plane_->start();
    }

    void TearDown() override {
        plane_.reset();
        if (cgroup_.empty()) return;
        try {
            netns::Cgroup::open(cgroup_).remove(5s);
        } catch (const std::exception&) {
        }
    }

    // curl through the explicit proxy: the status it got ("000": no answer).
    std::vector<std::string> curl(const std::string& method, const std::string& path) const {
        return {"/usr/bin/env",
                "curl",
                "-q",
                "--silent",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                (dir_.path() / "proxy-ca.crt").string(),
                "--proxy",
                "http://" + plane_->explicit_endpoint()->to_string(),
                "--proxy-user",
                std::string("dev:") + kToken,
                "-X",
                method,
                "https://api.github.com:" + std::to_string(github_.port()) + path};
    }
    std::string request(const std::string& method, const std::string& path) const {
        return testing::run(curl(method, path)).out;
    }

    testing::TempDir dir_{"tf-dataplane-serving"};
    testing::TestCa test_ca_;
    testing::TestUpstream github_;
    std::filesystem::path cgroup_;
    std::unique_ptr<proxy::CertificateAuthority> ca_;
    policy::ConfigStore config_;
    KeptTraffic traffic_;
    proxy::ApprovalQueue queue_;
    Vault vault_;
    std::promise<std::string> lost_;
    std::atomic<int> origin_questions_{0};
    std::optional<RemoteDataPlane> plane_;
};

TEST_F(DataPlaneServingTest, AgentsHttpsIsParsedByAProcessWithNothingAndAnsweredFromTheSupervisor) {
    const auto status = proc_status(plane_->pid());
    EXPECT_EQ(status.at("Uid"), "65534");
    for (const char* set : {"CapPrm", "CapEff", "CapBnd", "CapAmb"})
        EXPECT_EQ(status.at(set), "0000000000000000") << set;
    EXPECT_EQ(status.at("NoNewPrivs"), "1");
    EXPECT_EQ(status.at("Seccomp"), "2");

    // The leaf curl verified was signed by the supervisor's CA; the credential came from its vault.
    EXPECT_EQ(request("GET", "/repos/o/r/pulls"), "200");
    ASSERT_TRUE(github_.wait_for_requests(1));
    const auto seen = github_.requests().front();
    std::string authorization;
    for (const auto& [name, value] : seen.headers) {
        if (name == "Authorization" || name == "authorization") authorization = value;
    }
    EXPECT_NE(authorization.find("vault-github-secret"), std::string::npos) << authorization;
    EXPECT_EQ(seen.sni, "api.github.com");
    // Its row was made durable first, then completed by a record.
    EXPECT_EQ(traffic_.committed(), 1U);
    for (int i = 0; i < 200 && traffic_.records().empty(); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_FALSE(traffic_.records().empty());
    EXPECT_EQ(traffic_.records().back().action, "github.pr.list");
    EXPECT_TRUE(plane_->responsive(2s));
    EXPECT_EQ(plane_->counters().requests, 1U);

    // Refused by the policy in the data plane: nothing goes upstream.
    EXPECT_EQ(request("DELETE", "/repos/o/r"), "403");
    EXPECT_EQ(github_.requests().size(), 1U);
}

// An agent's listener, made here and passed: its connections are the agent's
// by the origin the supervisor answers, and only on the listener of that tag.
TEST_F(DataPlaneServingTest, AnAgentsListenerServesItsConnectionsByTheOriginTheSupervisorAnswers) {
    auto listener = netns::listen_tcp(*Endpoint::parse("127.0.0.1:0"));
    const auto port = netns::local_endpoint(listener.get()).port;
    plane_->serve_agent({kAgent, "dev", "agent-7", std::move(listener), {}, {}});
    const auto through_agent = [&](std::uint16_t to) {
        const std::string upstream = std::to_string(github_.port());
        return testing::run({"/usr/bin/env", "curl", "-q", "--silent", "--max-time", "30", "-o", "/dev/null", "-w",
                             "%{http_code}", "--cacert", (dir_.path() / "proxy-ca.crt").string(), "--connect-to",
                             "api.github.com:" + upstream + ":127.0.0.1:" + std::to_string(to),
                             "https://api.github.com:" + upstream + "/repos/o/r/pulls"})
            .out;
    };
    EXPECT_EQ(through_agent(port), "200");
    EXPECT_GE(origin_questions_.load(), 1);
    for (int i = 0; i < 200 && traffic_.records().empty(); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_FALSE(traffic_.records().empty());
    EXPECT_EQ(traffic_.records().back().agent, "agent-7");
    EXPECT_EQ(traffic_.records().back().gateway, "dev");

    // Another tag's listener: the origin names agent 7, so its connections are closed unserved.
    auto other = netns::listen_tcp(*Endpoint::parse("127.0.0.1:0"));
    const auto other_port = netns::local_endpoint(other.get()).port;
    plane_->serve_agent({kAgent + 1, "dev", "agent-8", std::move(other), {}, {}});
    EXPECT_EQ(through_agent(other_port), "000");
    // Stopped: its listener is closed in the data plane and here.
    plane_->stop_agent(kAgent);
    EXPECT_EQ(through_agent(port), "000");
    EXPECT_EQ(github_.requests().size(), 1U);
}

TEST_F(DataPlaneServingTest, KilledUnderTrafficItFailsClosedAndAnotherServesTheSameListener) {
    const auto port = plane_->explicit_endpoint()->port;
    const pid_t first = plane_->pid();
    // A merge waits for a human in the data plane...
    auto held =
        std::async(std::launch::async, [this] { return testing::run(curl("PUT", "/repos/o/r/pulls/1/merge")); });
    for (int i = 0; i < 500 && queue_.size() == 0; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(queue_.size(), 1U);
    // ...when it dies.
    ASSERT_EQ(::kill(first, SIGKILL), 0);
    auto lost = lost_.get_future();
    ASSERT_EQ(lost.wait_for(10s), std::future_status::ready);
    EXPECT_NE(lost.get().find("signal 9"), std::string::npos);
    EXPECT_EQ(queue_.size(), 0U);  // withdrawn
    const auto result = held.get();
    EXPECT_NE(result.out, "200");
    // The canary: the upstream never saw the merge.
    for (const auto& seen : github_.requests()) EXPECT_EQ(seen.target.find("/merge"), std::string::npos);

    for (int i = 0; i < 500 && plane_->started() < 2; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(plane_->started(), 2U);
    EXPECT_NE(plane_->pid(), first);
    EXPECT_EQ(plane_->explicit_endpoint()->port, port);
    EXPECT_EQ(request("GET", "/repos/o/r/pulls"), "200");
    EXPECT_EQ(github_.requests().size(), 1U);
}

}  // namespace
}  // namespace tameflare::dataplane
