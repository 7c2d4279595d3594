// Kernel enforcement end to end: a real tameflared, agents launched with the
// real `tf run`, and a probe inside each agent that tries every way out. The
// canaries are loopback servers of the host that must never see a
// connection or a datagram. Needs root, BTF and cgroup2; skips with the
// reason otherwise.
#include "bpf/enforcer.h"
#include "netns/cgroup.h"
#include "netns/namespaces.h"
#include "tests/support/daemon_process.h"
#include "tests/support/loopback.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"
#include "tests/support/test_upstream.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::atomic<int> sequence{0};

std::map<std::string, std::string> parse_probe(const std::string& out) {
    std::map<std::string, std::string> results;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        const auto equals = line.find('=');
        if (equals != std::string::npos) results[line.substr(0, equals)] = line.substr(equals + 1);
    }
    return results;
}

// A listening unix socket anyone may connect to, non-blocking.
UniqueFd listen_unix(const fs::path& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    std::memcpy(at.sun_path, path.c_str(), std::min(path.string().size(), sizeof at.sun_path - 1));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 || ::listen(fd.get(), 8) != 0) {
        throw std::system_error(errno, std::generic_category(), "listen on " + path.string());
    }
    ::chmod(path.c_str(), 0777);
    return fd;
}

bool process_alive(const std::string& pattern) {
    return run({"/usr/bin/pgrep", "-f", pattern}).status == 0;
}

// The agent keeps asking plain.test (through its DNS stub and proxy) and the
// canary; each answer is a line in a file.
constexpr const char* kPoller = R"(import socket, sys, time
out = open(sys.argv[1], "a", buffering=1)
port, canary = int(sys.argv[2]), int(sys.argv[3])
while True:
    try:
        with socket.create_connection(("plain.test", port), timeout=3) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: plain.test:%d\r\nConnection: close\r\n\r\n" % port)
            out.write("ok " + s.recv(64).split(b"\r\n")[0].decode() + "\n")
    except OSError as e:
        out.write("fail %s\n" % e.errno)
    try:
        socket.create_connection(("127.0.0.1", canary), timeout=1).close()
    except OSError:
        pass
    time.sleep(0.2)
)";

class AgentsTest : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        if (const std::string reason = bpf::unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
        const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(sequence++);
        cgroup_root_ = netns::cgroup2_mount() / ("tf-agents-test-" + tag);
        pins_ = fs::path("/sys/fs/bpf") / ("tf-agents-test-" + tag);
        fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                         fs::perms::others_read | fs::perms::others_exec);
        fs::copy_file(TF_SOURCE_DIR "/tests/privileged/probe.py", dir_.path() / "probe.py");
        fs::copy_file(TF_SOURCE_DIR "/tests/privileged/probe_attempt.py", dir_.path() / "probe_attempt.py");
        fs::copy_file(TF_SOURCE_DIR "/tests/privileged/control_probe.py", dir_.path() / "control_probe.py");
        fs::copy_file(TF_SOURCE_DIR "/tests/privileged/sandbox_probe.py", dir_.path() / "sandbox_probe.py");
        fs::create_directories(dir_.path() / "gateways.d");
        fs::create_directories(dir_.path() / "shared");  // gateway one's agents may write here
        std::ofstream(dir_.path() / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run",
                  "agents": {"cgroup_root": ")"
            << cgroup_root_.string() << R"(", "bpf_pin_dir": ")" << pins_.string() << R"(", "isolation": ")"
            << GetParam() << R"("},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false, "allowed_upstreams": ["127.0.0.1", "127.0.0.14", "127.0.0.15"],
                            "upstream_ca_file": ")"
            << test_ca_.ca_file().string() << R"(",
                            "hosts": {"plain.test": ["127.0.0.1"], "unlisted.test": ["127.0.0.1"],
                                      "github.com": ["127.0.0.1"], "pypi.org": ["127.0.0.14"],
                                      "files.pythonhosted.org": ["127.0.0.14"], "upload.pypi.org": ["127.0.0.14"],
                                      "registry.npmjs.org": ["127.0.0.14"], "api.openai.com": ["127.0.0.15"]}},
                  "dbus": {"address": "unix:path=)"
            << (dir_.path() / "bus.sock").string() << R"("}})";
        // Gateway one lists tameflared's own sockets and the system bus among its unix sockets: they stay
        // unreachable all the same.
        std::ofstream(dir_.path() / "gateways.d" / "one.json")
            << R"({"name": "one", "launch": {"users": ["nobody"]},
                   "unix_sockets": ["/run/systemd/journal/socket", ")"
            << (dir_.path() / "run" / "api.sock").string() << R"(", ")" << (dir_.path() / "bus.sock").string()
            << R"(", ")" << (dir_.path() / "run").string() << R"(/"],
                   "filesystem": {"write": [")"
            << (dir_.path() / "shared").string() << R"("]},
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
        // Gateway open takes some of the filesystem defaults out: the control of the filesystem test.
        std::ofstream(dir_.path() / "gateways.d" / "open.json") << R"({"name": "open", "launch": {"users": ["nobody"]},
                   "filesystem": {"hide": ["!~/.ssh"], "protect": ["!.git/hooks", "!.git/commondir"], "private_tmp": false},
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
        // Gateway watch only monitors: what its policy does not list is resolved, forwarded and recorded.
        std::ofstream(dir_.path() / "gateways.d" / "watch.json") << R"({"name": "watch", "enforcement": "monitor",
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"},
                                  "openai": {"credential": "openai-key", "preset": "read_only"},
                                  "github": {"credential": "github-token", "preset": "read_only"}}})";
        // Gateway build installs packages and may publish none.
        std::ofstream(dir_.path() / "gateways.d" / "build.json") << R"({"name": "build",
                   "filesystem": {"write": [")" << (dir_.path() / "shared").string()
                                                                 << R"("]},
                   "connectors": {"pypi": {"preset": "read_only"}, "npm": {"preset": "read_only"},
                                  "openai": {"credential": "openai-key", "preset": "read_only"}}})";
        // Gateway two runs root's agents as nobody, with root's groups dropped but one.
        std::ofstream(dir_.path() / "gateways.d" / "two.json") << R"({"name": "two", "run_as": "nobody",
                   "keep_groups": ["nogroup"],
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
        daemon_.emplace(TAMEFLARED_BINARY, dir_.path() / "tameflared.json", dir_.path() / "daemon.log");
        ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
    }

    void TearDown() override {
        if (daemon_) {
            daemon_->process().signal(SIGTERM);
            daemon_->process().wait();
        }
        if (cgroup_root_.empty()) return;
        std::error_code ignored;
        if (fs::exists(cgroup_root_, ignored)) {
            auto root = netns::Cgroup::open(cgroup_root_);
            {
                bpf::Enforcer enforcer(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});
                enforcer.release(cgroup_root_);
            }
            root.remove(5s);
        }
        fs::remove_all(pins_, ignored);
    }

    std::vector<std::string> tf_run(const std::vector<std::string>& command, const std::string& name = "",
                                    const std::string& gateway = "one") const {
        std::vector<std::string> argv{TF_BINARY,   "run",  "--socket", (dir_.path() / "run" / "launch.sock").string(),
                                      "--gateway", gateway};
        if (!name.empty()) argv.insert(argv.end(), {"--name", name});
        argv.emplace_back("--");
        argv.insert(argv.end(), command.begin(), command.end());
        return argv;
    }
    // tf at a path agents see: the build's may lie in /tmp (a checkout there), which agents have of their own.
    std::string agent_visible_tf() const {
        const fs::path copy = dir_.path() / "bin" / "tf";
        if (fs::exists(copy)) return copy.string();
        fs::create_directories(copy.parent_path());
        std::error_code cross_device;
        fs::create_hard_link(TF_BINARY, copy, cross_device);
        if (cross_device) fs::copy_file(TF_BINARY, copy);
        return copy.string();
    }
    // `tf run` as another user (setpriv), from the temporary directory.
    std::vector<std::string> as_user(const std::string& uid, std::vector<std::string> argv) const {
        std::vector<std::string> out{"/usr/bin/setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--"};
        out.insert(out.end(), argv.begin(), argv.end());
        return out;
    }

    // `tf run` of kPoller under `name`: it appends each answer to `answers`
    // (made here, writable by the agent's own uid) and dials `canary` between them.
    std::vector<std::string> poller(const fs::path& answers, const LoopbackListener& canary,
                                    const std::string& name) const {
        std::ofstream(dir_.path() / "poller.py") << kPoller;
        std::ofstream{answers};
        fs::permissions(answers,
                        fs::perms::all & ~fs::perms::owner_exec & ~fs::perms::group_exec & ~fs::perms::others_exec);
        // Its stdio is not tf run's pipes: those must close when tf run exits.
        return tf_run({"/bin/sh", "-c", "exec /usr/bin/python3 \"$@\" </dev/null >/dev/null 2>&1", "sh",
                       (dir_.path() / "poller.py").string(), answers.string(), std::to_string(upstream_.port()),
                       canary.port_text()},
                      name);
    }
    // Whether a 200 was appended to `answers` past `from` within 10 s.
    static bool answered_after(const fs::path& answers, std::size_t from) {
        for (int i = 0; i < 200; ++i) {
            if (slurp(answers).find("ok HTTP/1.1 200", from) != std::string::npos) return true;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }

    TempDir dir_{"tf-agents", kAgentVisibleBase};
    TestCa test_ca_{dir_.path()};  // the fake registries' certificates
    fs::path cgroup_root_;
    fs::path pins_;
    std::optional<DaemonProcess> daemon_;
    TestUpstream upstream_{{.address = "127.0.0.1"}};
};

TEST_P(AgentsTest, AllowedRequestsWorkAndEveryBypassFails) {
    LoopbackListener canary;
    const UniqueFd canary_udp = netns::bind_udp(*proxy::Endpoint::parse("127.0.0.1:0"));
    const auto canary_udp_port = netns::local_endpoint(canary_udp.get()).port;
    const std::string url = "http://plain.test:" + std::to_string(upstream_.port()) + "/hello";
    // HTTP_PROXY points nowhere useful: it is stripped, and curl is told to ignore proxies anyway.
    const Result allowed = run(tf_run({"/usr/bin/env", "HTTP_PROXY=http://127.0.0.1:1", "/usr/bin/curl", "-sS",
                                       "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", url}));
    EXPECT_EQ(allowed.status, 0) << allowed.err << daemon_->log();
    EXPECT_EQ(allowed.out, "200");

    const Result probe = run(
        tf_run({"/usr/bin/python3", (dir_.path() / "probe.py").string(), canary.port_text(),
                std::to_string(canary_udp_port), netns::cgroup2_mount().string(), (dir_.path() / "state").string()}));
    ASSERT_EQ(probe.status, 0) << probe.err;
    const auto results = parse_probe(probe.out);
    const std::string port = canary.port_text();
    // Dialing the canary lands on the proxy, which refuses a host no connector serves.
    EXPECT_EQ(results.at("hard_coded_ip"), "peer 127.0.0.1:" + port + " HTTP/1.1 403 Forbidden");
    EXPECT_EQ(results.at("ipv6"), "peer ::1:" + port + " HTTP/1.1 403 Forbidden");
    EXPECT_EQ(results.at("ipv4_mapped"), "peer ::ffff:127.0.0.1:" + port + " HTTP/1.1 403 Forbidden");
    EXPECT_EQ(results.at("udp"), "errno:EPERM");
    EXPECT_EQ(results.at("quic"), "errno:EPERM");
    EXPECT_EQ(results.at("dns_allowed"), "from 127.0.0.9:53 rcode 0 answers 1");
    EXPECT_EQ(results.at("dns_denied"), "from 127.0.0.9:53 rcode 5 answers 0");
    EXPECT_EQ(results.at("dns_tcp"), "rcode 0 answers 1");
    EXPECT_EQ(results.at("dns_exfiltration"), "50/50 refused");
    EXPECT_EQ(results.at("raw"), "errno:EPERM");
    // Ping sockets fail on ping_group_range (EACCES) before the BPF hook refuses them (EPERM).
    EXPECT_TRUE(results.at("ping") == "errno:EPERM" || results.at("ping") == "errno:EACCES") << results.at("ping");
    EXPECT_EQ(results.at("packet"), "errno:EPERM");
    // Without the sctp module the kernel refuses first; with it, the BPF hook (tests/bpf proves that one).
    EXPECT_TRUE(results.at("sctp") == "errno:EPERM" || results.at("sctp") == "errno:EPROTONOSUPPORT")
        << results.at("sctp");
    EXPECT_NE(results.at("new_namespaces"), "connected");
    EXPECT_EQ(results.at("cgroup_escape").rfind("errno:", 0), 0U) << results.at("cgroup_escape");
    EXPECT_EQ(results.at("state_dir"), "[]");  // hidden behind an empty tmpfs, even from uid 0
    EXPECT_EQ(results.at("database"), "errno:ENOENT");
    EXPECT_EQ(results.at("grandchild"), "started");

    EXPECT_EQ(canary.accept(100ms), -1) << "the TCP canary saw a connection";
    pollfd ready{canary_udp.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&ready, 1, 100), 0) << "the UDP canary got a datagram";
    // The agent's own daemon ended with it, and its cgroup is gone.
    EXPECT_FALSE(process_alive("sleep 317"));
    std::error_code ignored;
    for (const auto& entry : fs::directory_iterator(cgroup_root_ / "one", ignored)) {
        if (entry.is_directory()) ADD_FAILURE() << "left behind: " << entry.path();
    }
    // Decision records are queued for the log (common/log.h): wait for it.
    EXPECT_TRUE(daemon_->wait_for_log("DECISION=allow OUTCOME=allowed")) << daemon_->log();
    const std::string log = daemon_->log();
    EXPECT_NE(log.find("no connector of gateway one serves this host"), std::string::npos);
}

TEST_P(AgentsTest, TheAgentRunsAsTheCallerWithTheInterceptionCaTrusted) {
    const Result result = run(as_user("65534", tf_run({"/bin/sh", "-c",
                                                       "id -u; id -g; cat /proc/self/cgroup | tail -1; "
                                                       "grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\" >/dev/null "
                                                       "&& echo bundle; echo \"$TAMEFLARE_GATEWAY\"; exit 3"})));
    EXPECT_EQ(result.status, 3) << result.err;
    EXPECT_EQ(result.out, "65534\n65534\n0::/\nbundle\none\n");
    // The caller's supplementary groups are dropped (gateway one keeps none).
    std::vector<std::string> with_groups{"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--groups=4242,4343",
                                         "--"};
    const auto id = tf_run({"/usr/bin/id", "-G"});
    with_groups.insert(with_groups.end(), id.begin(), id.end());
    const Result groups = run(with_groups);
    EXPECT_EQ(groups.status, 0) << groups.err;
    EXPECT_EQ(groups.out, "65534\n");
    // A user the gateway does not list is refused, and nothing is left behind.
    const Result refused = run(as_user("4242", tf_run({"/bin/true"})));
    EXPECT_EQ(refused.status, 125);
    EXPECT_NE(refused.err.find("may not launch agents on gateway one"), std::string::npos) << refused.err;
}

TEST_P(AgentsTest, AnAgentCannotLaunchAnotherAgent) {
    auto inner = tf_run({"/bin/true"});
    inner[0] = agent_visible_tf();
    std::vector<std::string> command{"/bin/sh", "-c", "\"$@\"; echo \"inner=$?\"", "sh"};
    command.insert(command.end(), inner.begin(), inner.end());
    const Result result = run(tf_run(command));
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(result.out, "inner=125\n");
    EXPECT_NE(result.err.find("agents cannot launch agents"), std::string::npos) << result.err;
}

TEST_P(AgentsTest, AnAgentIsRefusedEveryControlCallWhateverItsUid) {
    const std::vector<std::string> probe{"/usr/bin/python3", (dir_.path() / "control_probe.py").string(),
                                         (dir_.path() / "run" / "api.sock").string()};
    // From the host, root is the owner: the same calls are answered.
    const Result host = run(probe);
    EXPECT_EQ(host.out, "200 -\n200 -\n404 unknown_approval\n200 -\n200 -\n") << host.err << daemon_->log();
    // The agent, launched by root, cannot even connect: the sandbox refuses tameflared's sockets (the REST server
    // would refuse a caller inside an agent cgroup anyway, which the enforced-unit test below shows).
    const Result agent = run(tf_run(probe));
    ASSERT_EQ(agent.status, 0) << agent.err;
    EXPECT_EQ(agent.out, "refused EPERM\nrefused EPERM\nrefused EPERM\nrefused EPERM\nrefused EPERM\n")
        << agent.err << daemon_->log();
}

TEST_P(AgentsTest, SignalsArePassedOnAndKillingTfRunEndsTheAgent) {
    Subprocess polite(tf_run({"/bin/sh", "-c",
                              "trap 'echo got-term; exit 42' TERM; echo ready; "
                              "while :; do sleep 0.1; done"},
                             "polite"));
    ASSERT_TRUE(daemon_->wait_for_log("agent polite started"));
    std::this_thread::sleep_for(300ms);
    polite.signal(SIGTERM);
    EXPECT_EQ(polite.wait(), 42);
    EXPECT_NE(polite.out().find("got-term"), std::string::npos);

    Subprocess doomed(tf_run({"/bin/sleep", "318"}, "doomed"));
    ASSERT_TRUE(daemon_->wait_for_log("agent doomed started"));
    doomed.signal(SIGKILL);
    doomed.wait();
    EXPECT_TRUE(daemon_->wait_for_log("agent doomed exited with status 137"));
    EXPECT_FALSE(process_alive("sleep 318"));
}

TEST_P(AgentsTest, BadLaunchesAreRefusedCleanly) {
    Result result = run({TF_BINARY, "run", "--socket", (dir_.path() / "run" / "launch.sock").string(), "--gateway",
                         "nope", "--", "/bin/true"});
    EXPECT_EQ(result.status, 125);
    EXPECT_NE(result.err.find("unknown gateway \"nope\""), std::string::npos) << result.err;
    result = run(tf_run({"/no/such/program"}));
    EXPECT_EQ(result.status, 125);
    EXPECT_NE(result.err.find("No such file or directory"), std::string::npos) << result.err;
    result = run(tf_run({"/bin/true"}, "Bad Name"));
    EXPECT_EQ(result.status, 125);
    EXPECT_NE(result.err.find("invalid agent name"), std::string::npos) << result.err;
    std::error_code ignored;
    for (const auto& entry : fs::directory_iterator(cgroup_root_ / "one", ignored)) {
        if (entry.is_directory()) ADD_FAILURE() << "left behind: " << entry.path();
    }
    // The daemon is still serving.
    EXPECT_EQ(run(tf_run({"/bin/true"})).status, 0);
}

TEST_P(AgentsTest, AgentsOfAKilledDaemonReachNothingAndResumeWhenItRestarts) {
    LoopbackListener canary;
    const fs::path answers = dir_.path() / "shared" / "answers.txt";
    Subprocess agent(poller(answers, canary, "survivor"));  // root's agent: a uid of its own appends
    ASSERT_TRUE(answered_after(answers, 0)) << slurp(answers) << daemon_->log();

    daemon_->process().signal(SIGKILL);
    daemon_->process().wait();
    std::this_thread::sleep_for(500ms);  // answers in flight at the kill
    const std::size_t dead_from = slurp(answers).size();
    std::this_thread::sleep_for(2s);
    const std::string while_dead = slurp(answers).substr(dead_from);
    EXPECT_NE(while_dead.find("fail"), std::string::npos) << while_dead;
    EXPECT_EQ(while_dead.find("ok"), std::string::npos) << "answered while the daemon was dead: " << while_dead;
    EXPECT_EQ(agent.wait(), 125);
    EXPECT_NE(agent.err().find("stays under enforcement"), std::string::npos) << agent.err();

    daemon_.emplace(TAMEFLARED_BINARY, dir_.path() / "tameflared.json", dir_.path() / "daemon2.log");
    ASSERT_TRUE(daemon_->wait_for_log("agent survivor adopted after a restart")) << daemon_->log();
    const std::size_t restarted_from = slurp(answers).size();
    EXPECT_TRUE(answered_after(answers, restarted_from)) << slurp(answers) << daemon_->log();
    EXPECT_EQ(canary.accept(100ms), -1) << "the canary saw a connection";

    // Its end is noticed although it is no longer the daemon's child.
    netns::Cgroup::open(cgroup_root_ / "one" / "survivor").kill();
    EXPECT_TRUE(daemon_->wait_for_log("agent survivor exited with status -1")) << daemon_->log();
}

// The data plane (the unprivileged process that parses agents' traffic) is killed under an agent's traffic: the
// supervisor says how it ended and starts another on the same listeners, the agent's requests resume, and nothing
// reaches the canary meanwhile (the agent's connections wait in the listener's backlog or fail).
TEST_P(AgentsTest, AKilledDataPlaneFailsClosedAndAnotherServesTheAgentAgain) {
    LoopbackListener canary;
    const fs::path answers = dir_.path() / "shared" / "answers.txt";
    Subprocess agent(poller(answers, canary, "steady"));
    ASSERT_TRUE(answered_after(answers, 0)) << slurp(answers) << daemon_->log();

    // Beside the agents' cgroup, never under it.
    const fs::path plane = cgroup_root_.parent_path() / (cgroup_root_.filename().string() + "-dataplane");
    const auto pids = netns::Cgroup::open(plane).processes();
    ASSERT_EQ(pids.size(), 1U);
    ASSERT_EQ(::kill(pids.front(), SIGKILL), 0);
    ASSERT_TRUE(daemon_->wait_for_log("ended with signal 9")) << daemon_->log();
    ASSERT_TRUE(daemon_->wait_for_log("the data plane serves again")) << daemon_->log();
    EXPECT_TRUE(answered_after(answers, slurp(answers).size())) << slurp(answers) << daemon_->log();
    EXPECT_EQ(canary.accept(100ms), -1) << "the canary saw a connection";
    EXPECT_EQ(::kill(daemon_->process().pid(), 0), 0) << "the supervisor lives on";

    netns::Cgroup::open(cgroup_root_ / "one" / "steady").kill();
    EXPECT_TRUE(daemon_->wait_for_log("agent steady exited")) << daemon_->log();
}

// A daemon whose maps lost an agent's registration (a new map layout after an upgrade replaces the maps) still
// adopts the agent: it gets new ports and a registration, and its traffic resumes.
TEST_P(AgentsTest, AnAgentWhoseRegistrationWasLostIsRegisteredAgainWhenAdopted) {
    const fs::path answers = dir_.path() / "shared" / "answers.txt";
    LoopbackListener canary;
    Subprocess agent(poller(answers, canary, "relocated"));
    ASSERT_TRUE(answered_after(answers, 0)) << slurp(answers) << daemon_->log();
    daemon_->process().signal(SIGKILL);
    daemon_->process().wait();
    const auto id = netns::cgroup_id(cgroup_root_ / "one" / "relocated");
    bpf::Enforcer(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()}).remove_agent(id);
    EXPECT_EQ(agent.wait(), 125);

    daemon_.emplace(TAMEFLARED_BINARY, dir_.path() / "tameflared.json", dir_.path() / "daemon2.log");
    ASSERT_TRUE(daemon_->wait_for_log("agent relocated adopted after a restart")) << daemon_->log();
    EXPECT_TRUE(answered_after(answers, slurp(answers).size())) << slurp(answers) << daemon_->log();
    EXPECT_EQ(bpf::Enforcer(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()}).agents().count(id), 1U);
    EXPECT_EQ(canary.accept(100ms), -1) << "the canary saw a connection";
    netns::Cgroup::open(cgroup_root_ / "one" / "relocated").kill();
    EXPECT_TRUE(daemon_->wait_for_log("agent relocated exited with status -1")) << daemon_->log();
}

// A daemon whose own view is narrowed (systemd's ProtectHome=, PrivateTmp=:
// a mount namespace of its own with directories covered) starts its agents in
// a copy of their caller's mount namespace: they see the machine as the user
// who ran tf run does, and the daemon's state stays hidden from them all the same.
TEST_P(AgentsTest, AgentsSeeTheHostsFilesNotTheDaemonsNarrowedView) {
    daemon_->process().signal(SIGTERM);
    ASSERT_EQ(daemon_->process().wait(), 0) << daemon_->log();
    const fs::path covered = dir_.path() / "home";
    fs::create_directories(covered);
    std::ofstream(covered / "marker") << "the host's view\n";
    fs::permissions(covered, fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
    const fs::path narrowed = dir_.path() / "narrowed.sh";
    std::ofstream(narrowed) << "#!/bin/sh\n"
                               "exec /usr/bin/unshare --mount --propagation private /bin/sh -c "
                               "'mount -t tmpfs narrowed \"$0\" && exec \"$@\"' \"$COVER\" \"$TAMEFLARED\" \"$@\"\n";
    fs::permissions(narrowed, fs::perms::owner_all);
    daemon_.emplace(
        narrowed.string(), dir_.path() / "tameflared.json", dir_.path() / "daemon2.log",
        std::vector<std::string>{"COVER=" + covered.string(), std::string("TAMEFLARED=") + TAMEFLARED_BINARY});
    ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
    // The daemon does live in a namespace of its own, where the marker is covered.
    const auto newest = run({"/usr/bin/pgrep", "-f", "-n", std::string("^") + TAMEFLARED_BINARY});
    ASSERT_EQ(newest.status, 0);
    const fs::path daemon_proc = "/proc/" + newest.out.substr(0, newest.out.find('\n'));
    EXPECT_FALSE(fs::exists(daemon_proc.string() + "/root" + covered.string() + "/marker"));
    EXPECT_NE(fs::read_symlink("/proc/self/ns/mnt"), fs::read_symlink(daemon_proc / "ns" / "mnt"));

    const Result seen =
        run(tf_run({"/bin/sh", "-c",
                    "cat " + covered.string() + "/marker; echo state:; ls -A " + (dir_.path() / "state").string()}));
    EXPECT_EQ(seen.status, 0) << seen.err << daemon_->log();
    EXPECT_EQ(seen.out, "the host's view\nstate:\n") << seen.err;
}

// The daemon's journal line of a traffic record with every one of `fields`
// (KEY=value as logged), waiting for it; "" when none came.
std::string record_line(const DaemonProcess& daemon, const std::vector<std::string>& fields) {
    for (int i = 0; i < 100; ++i) {
        std::istringstream lines(daemon.log());
        for (std::string line; std::getline(lines, line);) {
            if (std::all_of(fields.begin(), fields.end(),
                            [&](const std::string& field) { return line.find(field) != std::string::npos; })) {
                return line;
            }
        }
        std::this_thread::sleep_for(100ms);
    }
    return {};
}

// A monitored agent's whole traffic is seen: a name no connector lists is
// resolved and recorded, and its request forwarded and recorded as
// http.unknown. In a full gateway the same name is refused, and that too is
// recorded.
TEST_P(AgentsTest, AMonitoredAgentsUnlistedNamesAreResolvedForwardedAndRecorded) {
    const std::string url = "http://unlisted.test:" + std::to_string(upstream_.port()) + "/simple/tfdemo/";
    const std::vector<std::string> curl{"/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url};
    const Result watched = run(tf_run(curl, "watched", "watch"));
    EXPECT_EQ(watched.status, 0) << watched.err << daemon_->log();
    EXPECT_EQ(watched.out, "200");
    ASSERT_TRUE(upstream_.wait_for_requests(1));
    EXPECT_EQ(upstream_.requests().back().target, "/simple/tfdemo/");
    EXPECT_NE(record_line(*daemon_, {"AGENT=watched", "ACTION=dns.query", "OUTCOME=would_deny", "HOST=unlisted.test"}),
              "")
        << daemon_->log();
    EXPECT_NE(record_line(*daemon_, {"AGENT=watched", "ACTION=http.unknown", "OUTCOME=would_deny"}), "")
        << daemon_->log();

    const Result refused = run(tf_run(curl, "refused"));
    EXPECT_EQ(refused.status, 6) << refused.err;  // curl: could not resolve the host
    EXPECT_EQ(upstream_.requests().size(), 1U);
    EXPECT_NE(record_line(*daemon_, {"AGENT=refused", "ACTION=dns.query", "OUTCOME=denied", "HOST=unlisted.test"}), "")
        << daemon_->log();
}

// The loop an admin runs: record a monitored session, draft a policy from it
// with one command, apply it at full, replay: what was seen passes, anything
// new is denied.
TEST_P(AgentsTest, APolicyDraftedFromAMonitoredSessionAllowsItAndNothingMore) {
    const std::string port = std::to_string(upstream_.port());
    const auto requests = [&](const std::string& name, const std::vector<std::string>& lines) {
        std::string script;
        for (const auto& line : lines) script += "curl -s -o /dev/null -w '%{http_code} ' " + line + "; ";
        return run(tf_run({"/bin/sh", "-c", script}, name, "watch"));
    };
    const std::vector<std::string> session{"http://plain.test:" + port + "/status/200",
                                           "http://unlisted.test:" + port + "/simple/tfdemo/",
                                           "-X PUT http://unlisted.test:" + port + "/upload"};
    const Result watched = requests("recorded", session);
    EXPECT_EQ(watched.out, "200 200 200 ") << watched.err << daemon_->log();
    ASSERT_NE(record_line(*daemon_, {"AGENT=recorded", "ACTION=http.unknown", "METHOD=PUT", "OUTCOME=would_deny"}), "")
        << daemon_->log();

    const fs::path draft = dir_.path() / "gateways.d" / "watch.json";
    const Result suggested = run({TF_BINARY, "policy", "suggest", "--gateway", "watch", "--since", "1h", "-c",
                                  (dir_.path() / "tameflared.json").string(), "--socket",
                                  (dir_.path() / "run" / "api.sock").string(), "--output", draft.string(), "--force"});
    ASSERT_EQ(suggested.status, 0) << suggested.err;
    const auto text = run({"/bin/cat", draft.string()}).out;
    const Result checked = run({TF_BINARY, "policy", "check", "-c", (dir_.path() / "tameflared.json").string()});
    EXPECT_EQ(checked.status, 0) << checked.out << checked.err << text;
    const auto drafted = nlohmann::json::parse(text);
    EXPECT_EQ(drafted["enforcement"], "full") << text;
    EXPECT_TRUE(drafted["connectors"].contains("http-unlisted-test")) << text;

    const std::size_t mark = daemon_->log().size();
    daemon_->process().signal(SIGHUP);
    ASSERT_TRUE(daemon_->wait_for_log("configuration reloaded")) << daemon_->log().substr(mark);
    const Result replayed = requests("replayed", session);
    EXPECT_EQ(replayed.out, "200 200 200 ") << replayed.err << daemon_->log().substr(mark);
    // Anything new: another method on a seen host, a host never seen (which the DNS stub now refuses: 000).
    const Result fresh = requests(
        "fresh", {"-X DELETE http://plain.test:" + port + "/status/200",
                  "-X POST http://unlisted.test:" + port + "/simple/tfdemo/", "http://other.test:" + port + "/"});
    EXPECT_EQ(fresh.out, "403 403 000 ") << fresh.err << text;
}

// An SDK finds its key variable set, to a placeholder (the proxy puts the
// vault's credential on the wire); git takes github.com's SSH remotes over
// HTTPS; and SSH itself is refused with a reason that says what to use.
TEST_P(AgentsTest, AgentsGetKeyPlaceholdersHttpsForSshRemotesAndAReasonWhenSshIsRefused) {
    // The caller's own key (gateway watch strips it anyway) never reaches the agent.
    std::vector<std::string> with_key{"/usr/bin/env", "OPENAI_API_KEY=sk-the-callers-own"};
    const auto launch =
        tf_run({"/bin/sh", "-c",
                "echo \"$OPENAI_API_KEY $GITHUB_TOKEN\"; git config --get-all url.https://github.com/.insteadof"},
               "", "watch");
    with_key.insert(with_key.end(), launch.begin(), launch.end());
    const Result env = run(with_key);
    EXPECT_EQ(env.status, 0) << env.err;
    EXPECT_EQ(env.out,
              "tameflare-placeholder-openai tameflare-placeholder-github\ngit@github.com:\nssh://git@github.com/\n");

    const Result ssh = run(tf_run({"/usr/bin/python3", "-c",
                                   "import socket\n"
                                   "s = socket.create_connection(('github.com', 22), timeout=10)\n"
                                   "s.sendall(b'SSH-2.0-OpenSSH_9.2p1\\r\\n')\n"
                                   "print('closed' if s.recv(100) == b'' else 'answered')\n"},
                                  "ssh", "watch"));
    EXPECT_EQ(ssh.out, "closed\n") << ssh.err;
    const std::string line = record_line(*daemon_, {"AGENT=ssh", "OUTCOME=denied"});
    EXPECT_NE(line.find("SSH is not proxied"), std::string::npos) << daemon_->log();
    EXPECT_NE(line.find("use an HTTPS remote"), std::string::npos) << line;
}

// The port a test server prints as "listening on PORT" on stderr; "" when
// it did not start.
std::string listening_port(Subprocess& server) {
    if (!server.wait_for_stderr("listening on ")) return {};
    const std::string err = server.err();
    const auto at = err.find("listening on ") + 13;
    return err.substr(at, err.find('\n', at) - at);
}

// Everything the fake registry logged up to now: a last request of the
// test's own (straight to it, no proxy) marks the end of its log.
std::string registry_log(Subprocess& registry, const std::string& port) {
    const Result marker =
        run({"/usr/bin/curl", "-sk", "-o", "/dev/null", "https://127.0.0.14:" + port + "/end-of-test"});
    EXPECT_EQ(marker.status, 0) << marker.err;
    EXPECT_TRUE(registry.wait_for_stderr("GET /end-of-test ")) << registry.err();
    return registry.err();
}

// The real pip and npm install a package inside an agent, through the
// interception (trusting its CA by the sandbox's environment alone), from
// fake PyPI and npm registries on loopback; publishing is denied by the
// read_only preset and never reaches the registry.
TEST_P(AgentsTest, PipAndNpmInstallThroughTheRegistryConnectorsAndCannotPublish) {
    const auto leaf = test_ca_.issue({"pypi.org", "files.pythonhosted.org", "upload.pypi.org", "registry.npmjs.org"},
                                     {}, dir_.path(), "registry");
    Subprocess registry({"/usr/bin/python3", TF_SOURCE_DIR "/tests/daemon/proxy/fake_registry.py", "127.0.0.14",
                         leaf.cert_file.string(), leaf.key_file.string()});
    const std::string port = listening_port(registry);
    ASSERT_FALSE(port.empty()) << registry.err();
    // Agents of gateway build run as a uid of their own: a directory anyone may write, within its write rules.
    const fs::path installs = dir_.path() / "shared" / "installs";
    fs::create_directories(installs);
    fs::permissions(installs, fs::perms::all | fs::perms::sticky_bit);
    const std::string shared = installs.string();

    const Result pip =
        run(tf_run({"/usr/bin/env", "PIP_CONFIG_FILE=/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK=1",
                    "PIP_NO_CACHE_DIR=1", "/usr/bin/python3", "-m", "pip", "install", "--no-deps", "--target",
                    shared + "/python", "--index-url", "https://pypi.org:" + port + "/simple/", "tfdemo"},
                   "pip", "build"));
    EXPECT_EQ(pip.status, 0) << pip.out << pip.err << registry.err() << daemon_->log();
    const Result imported = run({"/usr/bin/env", "PYTHONPATH=" + shared + "/python", "/usr/bin/python3", "-c",
                                 "import tfdemo; print(tfdemo.VALUE)"});
    EXPECT_EQ(imported.out, "installed through the proxy\n") << imported.err;
    EXPECT_NE(record_line(*daemon_, {"AGENT=pip", "ACTION=pypi.index.get", "OUTCOME=allowed"}), "") << daemon_->log();
    EXPECT_NE(record_line(*daemon_, {"AGENT=pip", "ACTION=pypi.file.download", "OUTCOME=allowed"}), "")
        << daemon_->log();

    const Result npm =
        run(tf_run({"/usr/bin/env", "npm_config_userconfig=/dev/null", "npm_config_update_notifier=false",
                    "npm_config_logs_dir=" + shared + "/npm-logs", "/usr/bin/npm", "install", "--registry",
                    "https://registry.npmjs.org:" + port + "/", "--prefix", shared + "/node", "--cache",
                    shared + "/npm-cache", "--no-fund", "--audit", "tfdemo"},
                   "npm", "build"));
    EXPECT_EQ(npm.status, 0) << npm.out << npm.err << registry.err() << daemon_->log();
    const Result required =
        run({"/usr/bin/node", "-e", "console.log(require('" + shared + "/node/node_modules/tfdemo'))"});
    EXPECT_EQ(required.out, "installed through the proxy\n") << required.err;
    EXPECT_NE(record_line(*daemon_, {"AGENT=npm", "ACTION=npm.package.get", "OUTCOME=allowed"}), "") << daemon_->log();
    EXPECT_NE(record_line(*daemon_, {"AGENT=npm", "ACTION=npm.tarball.download", "OUTCOME=allowed"}), "")
        << daemon_->log();

    // Publishing: an npm PUT and a PyPI upload, both refused by the proxy.
    const Result publish =
        run(tf_run({"/bin/sh", "-c",
                    "curl -s -o /dev/null -w '%{http_code} ' -X PUT -H 'Content-Type: application/json' -d '{}' "
                    "https://registry.npmjs.org:" +
                        port +
                        "/tfdemo; "
                        "curl -s -o /dev/null -w '%{http_code}' -F content=@/etc/hostname https://upload.pypi.org:" +
                        port + "/legacy/"},
                   "publish", "build"));
    EXPECT_EQ(publish.out, "403 403") << publish.err;
    EXPECT_NE(record_line(*daemon_, {"AGENT=publish", "ACTION=npm.package.publish", "OUTCOME=denied"}), "")
        << daemon_->log();
    EXPECT_NE(record_line(*daemon_, {"AGENT=publish", "ACTION=pypi.package.upload", "OUTCOME=denied"}), "")
        << daemon_->log();
    const std::string seen = registry_log(registry, port);
    EXPECT_NE(seen.find("GET /tfdemo/-/tfdemo-1.0.0.tgz "), std::string::npos) << seen;
    EXPECT_EQ(seen.find("PUT /tfdemo"), std::string::npos) << seen;
    EXPECT_EQ(seen.find("POST /legacy/"), std::string::npos) << seen;
}

// The OpenAI SDK (from npm, as an agent would bundle it) starts with the
// placeholder in OPENAI_API_KEY, and its request reaches the service with the
// vault's key, which the agent never held.
TEST_P(AgentsTest, AnSdkRunsOnAPlaceholderAndItsRequestCarriesTheVaultsKey) {
    const fs::path sdk = fs::path(TF_SOURCE_DIR) / "tests" / "sdk";
    ASSERT_TRUE(fs::exists(sdk / "node_modules" / "openai" / "package.json"))
        << "the SDK is not installed: build.sh test does it (npm ci --prefix tests/sdk)";
    // Where agents can read it (a checkout in /tmp is not: agents have a /tmp of their own).
    const fs::path copy = dir_.path() / "sdk";
    fs::create_directories(copy / "node_modules");
    fs::copy(sdk / "node_modules", copy / "node_modules", fs::copy_options::recursive);
    fs::copy_file(sdk / "openai_models.js", copy / "openai_models.js");
    TestUpstream openai(
        {.address = "127.0.0.15", .tls = test_ca_.issue({"api.openai.com"}, {}, dir_.path(), "openai")});
    const Result vault =
        run({"/bin/sh", "-c",
             "printf sk-vault-openai-7f3a | \"$0\" vault set openai-key --connector openai --socket \"$1\"", TF_BINARY,
             (dir_.path() / "run" / "api.sock").string()});
    ASSERT_EQ(vault.status, 0) << vault.out << vault.err;

    const Result agent =
        run(tf_run({"/usr/bin/env", "OPENAI_BASE_URL=https://api.openai.com:" + std::to_string(openai.port()) + "/v1",
                    "/usr/bin/node", (copy / "openai_models.js").string(), (copy / "node_modules" / "openai").string()},
                   "sdk", "build"));
    EXPECT_EQ(agent.status, 0) << agent.out << agent.err << daemon_->log();
    EXPECT_NE(agent.out.find("\"ok\":true"), std::string::npos) << agent.out;
    const auto requests = openai.requests();
    ASSERT_EQ(requests.size(), 1U);
    const auto& seen = requests[0];
    EXPECT_EQ(seen.target, "/v1/models");
    std::string authorization;
    for (const auto& [name, value] : seen.headers) {
        if (name == "authorization" || name == "Authorization") authorization = value;
    }
    EXPECT_EQ(authorization, "Bearer sk-vault-openai-7f3a")
        << "the proxy put the vault's key in place of the placeholder";
    EXPECT_NE(record_line(*daemon_, {"AGENT=sdk", "ACTION=openai.model.list", "OUTCOME=allowed"}), "")
        << daemon_->log();
}

// Java reads no PEM bundle: agents get the CA bundle as a PKCS#12 trust
// store, through JAVA_TOOL_OPTIONS and over the JVM's default cacerts. A JVM
// that pins a trust store of its own aborts the handshake: that is recorded
// with the alert and the name, logged, and counted.
TEST_P(AgentsTest, JavaTrustsTheInterceptionAndARuntimeThatDoesNotIsRecorded) {
    const auto leaf = test_ca_.issue({"registry.npmjs.org"}, {}, dir_.path(), "registry");
    Subprocess registry({"/usr/bin/python3", TF_SOURCE_DIR "/tests/daemon/proxy/fake_registry.py", "127.0.0.14",
                         leaf.cert_file.string(), leaf.key_file.string()});
    const std::string port = listening_port(registry);
    ASSERT_FALSE(port.empty()) << registry.err();
    const std::string url = "https://registry.npmjs.org:" + port + "/tfdemo";
    fs::copy_file(TF_SOURCE_DIR "/tests/privileged/Fetch.java", dir_.path() / "Fetch.java");
    const std::string fetch = (dir_.path() / "Fetch.java").string();

    const Result java = run(tf_run({"/usr/bin/java", fetch, url}, "java", "build"));
    EXPECT_EQ(java.status, 0) << java.out << java.err << daemon_->log();
    EXPECT_EQ(java.out.rfind("200 ", 0), 0U) << java.out << java.err;
    // Without JAVA_TOOL_OPTIONS the JVM's default store is the agent's too.
    const Result plain =
        run(tf_run({"/usr/bin/env", "-u", "JAVA_TOOL_OPTIONS", "/usr/bin/java", fetch, url}, "", "build"));
    EXPECT_EQ(plain.out.rfind("200 ", 0), 0U) << plain.out << plain.err;

    // A runtime with a store of its own (here one that trusts only the registry's real CA).
    const fs::path own = dir_.path() / "own.p12";
    const Result imported =
        run({"/usr/bin/keytool", "-importcert", "-noprompt", "-alias", "registry", "-file", test_ca_.ca_file().string(),
             "-keystore", own.string(), "-storetype", "PKCS12", "-storepass", "secret"});
    ASSERT_EQ(imported.status, 0) << imported.out << imported.err;
    fs::permissions(own, fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
    for (int i = 0; i < 2; ++i) {
        const Result pinned = run(tf_run({"/usr/bin/java", "-Djavax.net.ssl.trustStore=" + own.string(),
                                          "-Djavax.net.ssl.trustStorePassword=secret", fetch, url},
                                         "pinned", "build"));
        EXPECT_EQ(pinned.out, "failed: SSLHandshakeException\n") << pinned.err;
    }
    const std::string line =
        record_line(*daemon_, {"AGENT=pinned", "ACTION=tls.certificate_refused", "HOST=registry.npmjs.org"});
    // Java's HttpClient hangs up without an alert; what it refused is named all the same.
    EXPECT_NE(line.find("the client refused the interception certificate"), std::string::npos) << daemon_->log();
    EXPECT_EQ(daemon_->log().find("warning: the client refused"), daemon_->log().rfind("warning: the client refused"))
        << "logged once for the agent and the name";
    const Result metrics = run({TF_BINARY, "metrics", "--socket", (dir_.path() / "run" / "api.sock").string()});
    EXPECT_NE(
        metrics.out.find("tameflare_tls_certificate_refused_total{gateway=\"build\",host=\"registry.npmjs.org\"} 2"),
        std::string::npos)
        << metrics.out << metrics.err;
    // Only the two trusting JVMs reached the registry.
    const std::string seen = registry_log(registry, port);
    std::size_t gets = 0;
    for (auto at = seen.find("GET /tfdemo "); at != std::string::npos; at = seen.find("GET /tfdemo ", at + 1)) ++gets;
    EXPECT_EQ(gets, 2U) << seen;
}

// tf run on a terminal: the agent uses it (its size, its name), and Ctrl-C
// typed there reaches the agent. The sleep is only the window for the Ctrl-C
// (which ends the wait at once): long, so a loaded machine cannot close it.
TEST_P(AgentsTest, ATerminalWorksWithItsSizeAndCtrlC) {
    std::vector<std::string> argv{"/usr/bin/python3", TF_SOURCE_DIR "/tests/privileged/tty_driver.py"};
    const auto command =
        tf_run({"/bin/sh", "-c", "stty size; tty; trap 'echo interrupted; exit 130' INT; echo ready; sleep 60 & wait"});
    argv.insert(argv.end(), command.begin(), command.end());
    const Result result = run(argv);
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("40 100\\r\\n/dev/pts/"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("interrupted\\r\\n' 130"), std::string::npos) << result.out;
}

// Whatever arrives on the launch socket is answered or refused cleanly; the
// daemon keeps serving and nothing is left behind.
TEST_P(AgentsTest, MalformedLaunchRequestsAreRefusedCleanly) {
    const Result result = run({"/usr/bin/python3", TF_SOURCE_DIR "/tests/privileged/launch_garbage.py",
                               (dir_.path() / "run" / "launch.sock").string()});
    ASSERT_EQ(result.status, 0) << result.err;
    const auto answers = parse_probe(result.out);
    const std::map<std::string, std::string> expected{
        {"not_json", "error: unexpected message"},
        {"not_object", "error: unexpected message"},
        {"gateway_number", "error: malformed request"},
        {"argv_string", "error: the launch request has no command"},
        {"argv_numbers", "error: argv holds a non-string"},
        {"env_object", "error: the launch request has no command"},
        {"no_fds", "error: a launch passes 4 descriptors"},
        {"two_fds", "error: a launch passes 4 descriptors"},
        {"signal_first", "error: unexpected message"},
        {"unknown_type", "error: unexpected message"},
        {"isolation_bad", "error: unknown isolation \"none\""},
        {"enforce_not_cgroup", "error: not a cgroup: /etc"},
        {"enforce_type", "error: malformed request"},
        {"empty", "error: unexpected message"},
    };
    for (const auto& [name, prefix] : expected) {
        ASSERT_TRUE(answers.count(name)) << name << "\n" << result.out;
        EXPECT_EQ(answers.at(name).rfind(prefix, 0), 0U) << name << ": " << answers.at(name);
    }
    std::error_code ignored;
    for (const auto& entry : fs::directory_iterator(cgroup_root_ / "one", ignored)) {
        if (entry.is_directory()) ADD_FAILURE() << "left behind: " << entry.path();
    }
    EXPECT_EQ(run(tf_run({"/bin/true"})).status, 0) << daemon_->log();
}

TEST_P(AgentsTest, DoctorReportsEveryEnforcementPropertyAsPassed) {
    const std::vector<std::string> doctor{
        agent_visible_tf(), "doctor", "--socket",    (dir_.path() / "run" / "launch.sock").string(),
        "--gateway",        "one",    "--isolation", GetParam()};
    for (const std::string uid : {"0", "65534"}) {  // any user the gateway lets launch
        const Result result = run(as_user(uid, doctor));
        EXPECT_EQ(result.status, 0) << result.out << result.err;
        EXPECT_EQ(result.out.find("FAIL"), std::string::npos) << result.out;
        // This kernel (6.7+, Landlock ABI 6+) gives every layer: no fallback either.
        EXPECT_EQ(result.out.find("FALLBACK"), std::string::npos) << result.out;
        for (const char* property : {"TCP goes to the proxy (IPv4)",
                                     "TCP goes to the proxy (IPv6)",
                                     "UDP other than DNS is refused",
                                     "DNS goes to the stub",
                                     "raw sockets are refused",
                                     "leaving the cgroup is refused",
                                     "no capabilities",
                                     "layer pid_namespace",
                                     "layer landlock ",
                                     "layer landlock_scopes",
                                     "layer unix_socket_filter",
                                     "layer bind_filter",
                                     "the agent is not root",
                                     "processes outside cannot be seen or signalled",
                                     "ptrace of a process outside is refused",
                                     "unix sockets outside are refused",
                                     "abstract unix sockets outside are refused",
                                     "tameflared's sockets are unreachable",
                                     "binding is loopback only",
                                     "new user namespaces are refused",
                                     "layer seccomp",
                                     "nothing outside was reached"}) {
            EXPECT_NE(result.out.find(std::string("PASS  ") + property), std::string::npos) << result.out;
        }
        // The filesystem section as applied to the probe: gateway one's own write entry, the private /tmp.
        EXPECT_NE(result.out.find("Filesystem of gateway one"), std::string::npos) << result.out;
        EXPECT_NE(result.out.find("    " + (dir_.path() / "shared").string() + "\n"), std::string::npos) << result.out;
        EXPECT_NE(result.out.find("    /tmp\n"), std::string::npos) << result.out;
    }
    // Without a daemon it says so and fails.
    daemon_->process().signal(SIGTERM);
    daemon_->process().wait();
    daemon_.reset();
    const Result down = run(doctor);
    EXPECT_EQ(down.status, 1);
    EXPECT_NE(down.out.find("FAIL  tameflared's launch socket"), std::string::npos) << down.out;
}

// tf enforce: an existing cgroup (a service) under a gateway, across a
// restart of the daemon, and released again.
TEST_P(AgentsTest, AnExistingCgroupCanBePutUnderAGatewayAndReleased) {
    if (GetParam() != "cgroup") GTEST_SKIP() << "enforced services share the host's namespace: one run is enough";
    LoopbackListener canary;
    auto service = netns::Cgroup::create(netns::cgroup2_mount(), "tf-enforce-test-" + std::to_string(::getpid()));
    struct RemovedAtEnd {  // also when an assertion ends the test early
        netns::Cgroup& cgroup;
        ~RemovedAtEnd() { cgroup.remove(5s); }
    } removed_at_end{service};
    const std::string socket = (dir_.path() / "run" / "launch.sock").string();
    const auto enforce = [&](std::vector<std::string> extra) {
        std::vector<std::string> argv{TF_BINARY, "enforce", "--socket", socket, "--cgroup", service.path().string()};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return argv;
    };
    // A process of the service: it joins the cgroup, then fetches both URLs.
    const std::string port = std::to_string(upstream_.port());
    const auto in_service = [&] {
        return run({"/bin/sh", "-c",
                    "echo $$ > \"$0/cgroup.procs\" && for url in \"$@\"; do curl -sS -m 5 -o /dev/null -w "
                    "'%{http_code} ' --resolve plain.test:" +
                        port + ":127.0.0.1 \"$url\"; done",
                    service.path().string(), "http://plain.test:" + port + "/hello",
                    "http://127.0.0.1:" + canary.port_text() + "/"});
    };

    Result result = run(as_user("4242", enforce({"--gateway", "one"})));
    EXPECT_EQ(result.status, 125);
    EXPECT_NE(result.err.find("only root"), std::string::npos) << result.err;

    result = run(enforce({"--gateway", "one", "--name", "runner"}));
    ASSERT_EQ(result.status, 0) << result.err << daemon_->log();
    EXPECT_NE(result.out.find("under gateway one as runner"), std::string::npos);
    // No process of it has the drop-in's CA lines: tf enforce says what its HTTPS requests will lack.
    EXPECT_NE(result.err.find("will not trust the interception CA"), std::string::npos) << result.err;
    EXPECT_EQ(in_service().out, "200 403 ");  // the canary's address is not a host the gateway serves
    EXPECT_EQ(canary.accept(100ms), -1) << "the canary saw a connection from an enforced service";
    // A process of an enforced service cannot reach the REST socket; one whose socket was made before it joined the
    // service's cgroup (the filter judges a socket by where it was made) is refused by the REST server itself.
    const Result control = run(
        {"/bin/sh", "-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", service.path().string(), "/usr/bin/python3",
         (dir_.path() / "control_probe.py").string(), (dir_.path() / "run" / "api.sock").string()});
    EXPECT_EQ(control.out, "refused EPERM\nrefused EPERM\nrefused EPERM\nrefused EPERM\nrefused EPERM\n")
        << control.err;
    const Result joined = run({"/usr/bin/python3", (dir_.path() / "control_probe.py").string(),
                               (dir_.path() / "run" / "api.sock").string(), service.path().string()});
    EXPECT_EQ(joined.out, "403 agent_caller\n403 agent_caller\n403 agent_caller\n403 agent_caller\n403 agent_caller\n")
        << joined.err;

    daemon_->process().signal(SIGTERM);
    daemon_->process().wait();
    EXPECT_NE(in_service().out, "200 200 ");  // no daemon: nothing gets through
    EXPECT_EQ(canary.accept(100ms), -1);
    daemon_.emplace(TAMEFLARED_BINARY, dir_.path() / "tameflared.json", dir_.path() / "daemon2.log");
    ASSERT_TRUE(daemon_->wait_for_log("under gateway one as runner")) << daemon_->log();
    EXPECT_EQ(in_service().out, "200 403 ");

    result = run(enforce({"--release"}));
    ASSERT_EQ(result.status, 0) << result.err;
    const Result released = in_service();
    const UniqueFd direct(canary.accept(2s));
    EXPECT_TRUE(direct) << "released, the service connects directly again: " << released.out;

    // The service stops (systemd removes its cgroup) and starts again: the
    // drop-in's ExecStartPre enforces it under the same name, which works.
    ASSERT_EQ(run(enforce({"--gateway", "one", "--name", "runner"})).status, 0) << daemon_->log();
    service.remove(5s);
    service = netns::Cgroup::create(netns::cgroup2_mount(), "tf-enforce-test-" + std::to_string(::getpid()));
    result = run(enforce({"--gateway", "one", "--name", "runner"}));
    ASSERT_EQ(result.status, 0) << result.err << daemon_->log();
    EXPECT_TRUE(daemon_->wait_for_log("is gone; its enforcement ended")) << daemon_->log();
    EXPECT_EQ(in_service().out, "200 403 ");
    EXPECT_EQ(canary.accept(100ms), -1) << "the canary saw a connection from the restarted service";
    EXPECT_EQ(run(enforce({"--release"})).status, 0);
}

// Processes of the agent's own user outside it (the user's shell, tmux, tf
// run, another agent) have the network to themselves: the agent can neither
// see them, nor trace, signal or read them, nor reach their unix sockets, nor
// get a listener of its own onto the host's interfaces.
TEST_P(AgentsTest, AnAgentCannotReachAnyProcessOrUnixSocketOutsideIt) {
    LoopbackListener canary;
    // Outside, as the agent's user: a process holding a secret in its environment, a unix-socket forwarder to the
    // canary, and an abstract socket on the host.
    Subprocess outside(as_user("65534", {"/usr/bin/env", "TF_OUTSIDE_SECRET=s3cr3t", "/bin/sleep", "319"}));
    const fs::path sockets = dir_.path() / "sockets";
    fs::create_directories(sockets);
    fs::permissions(sockets, fs::perms::all);
    const fs::path forwarder_path = sockets / "forward.sock";
    Subprocess forwarder(as_user("65534", {"/usr/bin/python3", TF_SOURCE_DIR "/tests/privileged/unix_forwarder.py",
                                           forwarder_path.string(), canary.port_text()}));
    ASSERT_TRUE(forwarder.wait_for_stderr("ready", 0, 10s)) << forwarder.err();
    const std::string abstract = "tf-agents-test-" + std::to_string(::getpid());
    const UniqueFd abstract_listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    std::memcpy(at.sun_path + 1, abstract.data(), abstract.size());
    ASSERT_EQ(::bind(abstract_listener.get(), reinterpret_cast<sockaddr*>(&at),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size())),
              0);
    ASSERT_EQ(::listen(abstract_listener.get(), 8), 0);
    // A stand-in for the system bus, at the address the daemon was given (it is never an agent's to reach).
    const UniqueFd bus = listen_unix(dir_.path() / "bus.sock");

    const Result probe = run(as_user(
        "65534", tf_run({"/usr/bin/python3", (dir_.path() / "sandbox_probe.py").string(), std::to_string(outside.pid()),
                         forwarder_path.string(), abstract, (dir_.path() / "run" / "launch.sock").string(),
                         (dir_.path() / "run" / "api.sock").string(), (dir_.path() / "bus.sock").string()})));
    ASSERT_EQ(probe.status, 0) << probe.err << daemon_->log();
    const auto results = parse_probe(probe.out);
    EXPECT_EQ(results.at("uid"), "65534");
    // Its own PID namespace: the command is pid 2 under a small init, and /proc shows nothing else (the init is
    // not dumpable, so hidepid hides it as well).
    EXPECT_EQ(results.at("pid"), "2");
    EXPECT_EQ(results.at("proc_pids"), "2") << probe.out;
    EXPECT_EQ(results.at("ptrace_outside"), "errno:ESRCH");
    EXPECT_EQ(results.at("ptrace_init"), "errno:EPERM");
    EXPECT_EQ(results.at("environ_outside"), "errno:ENOENT");
    EXPECT_EQ(results.at("environ_init"), "errno:ENOENT");
    EXPECT_EQ(results.at("signal_outside"), "errno:ESRCH");
    EXPECT_EQ(results.at("pidfd_outside"), "errno:ESRCH");
    // Unix sockets: refused by the BPF filter (EPERM) whatever the address looks like.
    EXPECT_EQ(results.at("forwarder"), "errno:EPERM");
    EXPECT_EQ(results.at("forwarder_dgram"), "errno:EPERM");
    EXPECT_EQ(results.at("forwarder_relative"), "errno:EPERM");
    // In its own network namespace the host's abstract names do not exist; in the host's, Landlock's scope and the
    // filter refuse them.
    EXPECT_EQ(results.at("abstract"), GetParam() == "netns" ? "errno:ECONNREFUSED" : "errno:EPERM");
    EXPECT_EQ(results.at("socket0"), "errno:EPERM");  // the launch socket
    EXPECT_EQ(results.at("socket1"), "errno:EPERM");  // the REST socket, though gateway one lists it
    EXPECT_EQ(results.at("socket2"), "errno:EPERM");  // the system bus, though gateway one lists it
    EXPECT_EQ(results.at("bind_any"), "127.0.0.1");
    EXPECT_EQ(results.at("bind_any6"), "::1");
    EXPECT_EQ(results.at("bind_other"), "errno:EPERM");
    EXPECT_EQ(results.at("user_namespace"), "errno:EPERM");  // no chroot or mount around the unix socket list
    EXPECT_EQ(results.at("write_etc"), "errno:EACCES");

    EXPECT_EQ(canary.accept(200ms), -1) << "the canary got a connection through the forwarder";
    EXPECT_EQ(::accept4(abstract_listener.get(), nullptr, nullptr, SOCK_CLOEXEC), -1);
    EXPECT_EQ(::accept4(bus.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK), -1);
    EXPECT_TRUE(daemon_->wait_for_log("covers a socket of tameflared or the system bus")) << daemon_->log();
    outside.signal(SIGKILL);
    outside.wait();
    forwarder.signal(SIGKILL);
    forwarder.wait();
}

// tmux is the classic way out: `tmux send-keys` or `run-shell` to the user's
// server runs a command outside every sandbox.
TEST_P(AgentsTest, TheUsersTmuxServerOutsideRunsNothingForTheAgent) {
    if (!fs::exists("/usr/bin/tmux")) GTEST_SKIP() << "tmux is not installed (./build.sh deps installs it)";
    LoopbackListener canary;
    const fs::path sockets = dir_.path() / "tmux";
    fs::create_directories(sockets);
    fs::permissions(sockets, fs::perms::all);
    const std::string server = (sockets / "default").string();
    // The user's server runs an interactive shell in its pane, as a real one does. SHELL is set: nobody's login
    // shell is nologin, and CI may start with no SHELL at all.
    ASSERT_EQ(run(as_user("65534", {"/usr/bin/env", "SHELL=/bin/sh", "/usr/bin/tmux", "-S", server, "new-session", "-d",
                                    "-s", "user"}))
                  .status,
              0);
    struct KilledAtEnd {
        std::vector<std::string> kill;
        ~KilledAtEnd() { run(kill); }
    } killed_at_end{as_user("65534", {"/usr/bin/tmux", "-S", server, "kill-server"})};
    const std::string escape =
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', " + canary.port_text() + "), timeout=5)\"";
    const Result result =
        run(as_user("65534", tf_run({"/bin/sh", "-c",
                                     "tmux -S \"$0\" run-shell \"$1\"; echo run-shell=$?; "
                                     "tmux -S \"$0\" send-keys -t user \"$1\" Enter; echo send-keys=$?",
                                     server, escape})));
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.out.find("run-shell=1"), std::string::npos) << result.out << result.err;
    EXPECT_NE(result.out.find("send-keys=1"), std::string::npos) << result.out << result.err;
    EXPECT_EQ(canary.accept(1s), -1) << "tmux ran the agent's command outside";
    // The server is alive and still the user's: it was the agent that was refused.
    EXPECT_EQ(run(as_user("65534", {"/usr/bin/tmux", "-S", server, "has-session", "-t", "user"})).status, 0);
    // The same keys sent from outside the agent do run: what the agent was refused is a real way out.
    EXPECT_EQ(run(as_user("65534", {"/usr/bin/tmux", "-S", server, "send-keys", "-t", "user", escape, "Enter"})).status,
              0);
    const UniqueFd reached{canary.accept(10s)};
    EXPECT_TRUE(reached) << "the control: keys sent from outside should reach the canary";
}

// The filesystem section's defaults, as a user's coding agent meets them: the user's keys are hidden, nothing
// that runs later (start-up files, user units, git hooks and configuration) can be written, /tmp is the agent's
// own, and the working directory and the caches are writable enough for a real build and a commit.
TEST_P(AgentsTest, AnAgentCanBuildAndCommitButNeitherReadTheUsersKeysNorPlantCodeForLater) {
    if (!fs::exists("/usr/bin/git") || !fs::exists("/usr/bin/cmake") || !fs::exists("/usr/bin/make")) {
        GTEST_SKIP() << "git, cmake and make are needed (./build.sh deps installs them)";
    }
    const fs::path home = dir_.path() / "home";
    const fs::path project = home / "src" / "app";
    const auto write = [](const fs::path& file, const std::string& text) {
        fs::create_directories(file.parent_path());
        std::ofstream(file) << text;
    };
    write(home / ".ssh" / "id_ed25519", "SECRET-KEY\n");
    write(home / ".aws" / "credentials", "SECRET-AWS\n");
    write(home / ".config" / "gh" / "hosts.yml", "SECRET-GH\n");
    write(home / ".netrc", "SECRET-NETRC\n");
    write(home / ".bashrc", "# the user's\n");
    fs::create_directories(home / ".config" / "systemd");
    fs::create_directories(home / ".cache");
    write(project / "CMakeLists.txt",
          "cmake_minimum_required(VERSION 3.13)\nproject(hello C)\nadd_executable(hello hello.c)\n");
    write(project / "hello.c", "#include <stdio.h>\nint main(void) { puts(\"built and ran\"); return 0; }\n");
    ASSERT_EQ(run({"/usr/bin/git", "-C", project.string(), "init", "-q"}).status, 0);
    write(project / ".git" / "modules" / "lib" / "config", "[core]\n");  // a submodule's own repository
    ASSERT_EQ(run({"/bin/chown", "-R", "65534:65534", home.string()}).status, 0);
    const std::string tag = std::to_string(::getpid()) + "-" + GetParam();
    const fs::path host_marker = "/tmp/tf-host-marker-" + tag;
    std::ofstream(host_marker) << "host\n";
    const std::string script = R"(
        try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=yes"; else echo "$name=no"; fi; }
        echo "ssh=[$(cat ~/.ssh/id_ed25519 2>/dev/null)]"
        echo "ssh_relative=[$(cat ../../.ssh/id_ed25519 2>/dev/null)]"
        echo "aws=[$(cat ~/.aws/credentials 2>/dev/null)]"
        echo "gh=[$(cat ~/.config/gh/hosts.yml 2>/dev/null)]"
        echo "netrc=[$(cat ~/.netrc 2>/dev/null)]"
        try bashrc sh -c 'echo evil >> ~/.bashrc'
        try unit sh -c 'mkdir -p ~/.config/systemd/user && echo evil > ~/.config/systemd/user/x.service'
        try hook sh -c 'echo evil > .git/hooks/pre-commit'
        try hook_relative sh -c 'cd .git && echo evil > hooks/post-checkout'
        try hooks_path git config core.hooksPath /tmp/hooks
        try submodule_config sh -c 'echo "[core] fsmonitor = evil" >> .git/modules/lib/config'
        mkdir -p evil && cp -r .git/objects .git/refs .git/HEAD evil/ &&
            printf '[core]\n\trepositoryformatversion = 0\n\tfsmonitor = "echo PLANTED >&2; false"\n' > evil/config
        echo "$PWD/evil" > .git/commondir; echo evil > .envrc; sleep 1
        try commondir_stays test -e .git/commondir
        try move_git mv .git .git.old
        try move_hooks mv .git/hooks .git/hooks.old
        try workdir sh -c 'echo ok > notes.txt'
        try cache sh -c 'echo ok > ~/.cache/agent-cache'
        try tmp sh -c 'echo agent > /tmp/tf-agent-file-)" +
                               tag + R"('
        try host_tmp test -e )" +
                               host_marker.string() + R"(
        try build sh -c 'cmake -S . -B build && cmake --build build && ./build/hello | grep -q "built and ran"'
        try commit sh -c 'git add -A && git -c user.name=Agent -c user.email=agent@example.test commit -qm built'
    )";
    const auto agent = [&](const std::string& gateway) {
        return run(as_user("65534", {"/usr/bin/env", "-C", project.string(), "HOME=" + home.string(), TF_BINARY, "run",
                                     "--socket", (dir_.path() / "run" / "launch.sock").string(), "--gateway", gateway,
                                     "--", "/bin/bash", "-c", script}));
    };
    const Result result = agent("one");

    EXPECT_EQ(result.status, 0) << result.err << daemon_->log();
    const auto said = [&](const std::string& line) { return result.out.find(line + "\n") != std::string::npos; };
    for (const char* hidden : {"ssh=[]", "ssh_relative=[]", "aws=[]", "gh=[]", "netrc=[]"}) {
        EXPECT_TRUE(said(hidden)) << hidden << "\n" << result.out;
    }
    for (const char* refused :
         {"bashrc=no", "unit=no", "hook=no", "hook_relative=no", "hooks_path=no", "submodule_config=no",
          "commondir_stays=no", "move_git=no", "move_hooks=no", "host_tmp=no"}) {
        EXPECT_TRUE(said(refused)) << refused << "\n" << result.out;
    }
    for (const char* allowed : {"workdir=yes", "cache=yes", "tmp=yes", "build=yes", "commit=yes"}) {
        EXPECT_TRUE(said(allowed)) << allowed << "\n" << result.out << result.err;
    }
    // Nothing reached the user's files or the host's /tmp.
    EXPECT_EQ(slurp(home / ".bashrc"), "# the user's\n");
    EXPECT_FALSE(fs::exists(home / ".config" / "systemd" / "user"));
    EXPECT_FALSE(fs::exists(project / ".git" / "hooks" / "pre-commit"));
    EXPECT_FALSE(fs::exists(project / ".git" / "hooks" / "post-checkout"));
    EXPECT_EQ(slurp(project / ".git" / "config").find("hooksPath"), std::string::npos);
    EXPECT_EQ(slurp(project / ".git" / "modules" / "lib" / "config"), "[core]\n");
    // What it made under protected names that did not exist was moved aside (during the run, and at its end), and
    // said so: the user's next git command reads the repository's own configuration.
    EXPECT_FALSE(fs::exists(project / ".git" / "commondir"));
    EXPECT_FALSE(fs::exists(project / ".envrc"));
    EXPECT_NE(result.err.find("created a protected path; moved aside: " + (project / ".git").string() + "/commondir"),
              std::string::npos)
        << result.err;
    const Result status = run({"/usr/bin/git", "-C", project.string(), "-c", "safe.directory=*", "status"});
    EXPECT_EQ(status.err.find("PLANTED"), std::string::npos) << status.err;
    EXPECT_FALSE(fs::exists("/tmp/tf-agent-file-" + tag));
    EXPECT_EQ(slurp(project / "notes.txt"), "ok\n");
    EXPECT_TRUE(fs::exists(home / ".cache" / "agent-cache"));
    EXPECT_EQ(run({"/usr/bin/git", "-C", project.string(), "-c", "safe.directory=*", "log", "--format=%s"}).out,
              "built\n");

    // The control: a gateway that takes those defaults out lets the same script read the key, write the hook and
    // see the host's /tmp: what refused them above was the filesystem section.
    const Result control = agent("open");
    EXPECT_NE(control.out.find("ssh=[SECRET-KEY]\n"), std::string::npos) << control.out << control.err;
    EXPECT_NE(control.out.find("hook=yes\n"), std::string::npos) << control.out;
    EXPECT_NE(control.out.find("host_tmp=yes\n"), std::string::npos) << control.out;
    EXPECT_NE(control.out.find("commondir_stays=yes\n"), std::string::npos) << control.out;
    const Result planted = run({"/usr/bin/git", "-C", project.string(), "-c", "safe.directory=*", "status"});
    EXPECT_NE(planted.err.find("PLANTED"), std::string::npos) << "the commondir attack is real: " << planted.err;
    fs::remove(project / ".git" / "commondir");
    fs::remove(project / ".git" / "hooks" / "pre-commit");
    fs::remove(host_marker);
}

// Root's agents never run as uid 0: without capabilities uid 0 still owns
// /etc/cron.d and /usr/local/bin, and could signal tameflared.
TEST_P(AgentsTest, AnAgentLaunchedByRootIsNotRootCannotPlantCodeOrSignalTheDaemon) {
    const std::string daemon_pid = std::to_string(daemon_->process().pid());
    const std::string script =
        "id -u; id -G; touch /etc/cron.d/tf-planted 2>/dev/null && echo planted; "
        "touch /usr/local/bin/tf-planted 2>/dev/null && echo planted; "
        "kill -STOP " +
        daemon_pid + " 2>/dev/null && echo stopped; echo \"$HOME\"; exit 0";
    const Result dynamic = run(tf_run({"/bin/sh", "-c", script}));
    ASSERT_EQ(dynamic.status, 0) << dynamic.err << daemon_->log();
    std::istringstream lines(dynamic.out);
    std::string uid;
    std::string groups;
    std::string home;
    std::getline(lines, uid);
    std::getline(lines, groups);
    std::getline(lines, home);
    EXPECT_NE(uid, "0") << dynamic.out;
    EXPECT_GE(std::stoul(uid), 65536UL) << "a dynamic uid above the ordinary ranges: " << dynamic.out;
    EXPECT_EQ(groups, uid) << "only its own group, none of root's";
    EXPECT_EQ(home, "/");
    EXPECT_FALSE(fs::exists("/etc/cron.d/tf-planted"));
    EXPECT_FALSE(fs::exists("/usr/local/bin/tf-planted"));
    EXPECT_TRUE(daemon_->wait_for_log("RUN_UID=" + uid)) << daemon_->log();
    // The daemon was never stopped: it still launches.
    const Result named = run(tf_run({"/bin/sh", "-c", "id -u; id -G; echo \"$HOME $USER\""}, "", "two"));
    EXPECT_EQ(named.status, 0) << named.err << daemon_->log();
    EXPECT_EQ(named.out, "65534\n65534\n/nonexistent nobody\n");
    // Two agents at once get two uids; the control plane tells who launched an agent and who it runs as.
    Subprocess first(tf_run({"/bin/sh", "-c", "id -u; sleep 2"}, "dynamic-first"));
    ASSERT_TRUE(daemon_->wait_for_log("agent dynamic-first started")) << daemon_->log();
    const Result second = run(tf_run({"/usr/bin/id", "-u"}));
    const Result shown = run({TF_BINARY, "agents", "show", "dynamic-first", "--json", "--socket",
                              (dir_.path() / "run" / "api.sock").string()});
    first.wait();
    EXPECT_NE(first.out(), second.out);
    const auto agent = nlohmann::json::parse(shown.out, nullptr, false);
    ASSERT_TRUE(agent.is_object()) << shown.out << shown.err;
    EXPECT_EQ(agent.value("uid", -1), 0);
    EXPECT_EQ(std::to_string(agent.value("run_uid", 0U)) + "\n", first.out());
}

// A kernel without cgroup/connect_unix (before 6.7), as the daemon's option makes it here: the known service
// sockets are hidden in the agent's mount namespace (the documented fallback), the agent is told the layer is a
// fallback, and a gateway that requires the filter is refused with the reason.
TEST_P(AgentsTest, WithoutTheUnixSocketFilterTheKnownServiceSocketsAreHiddenOrTheLaunchRefused) {
    daemon_->process().signal(SIGTERM);
    ASSERT_EQ(daemon_->process().wait(), 0) << daemon_->log();
    std::string config = slurp(dir_.path() / "tameflared.json");
    config.replace(config.find(R"("isolation": ")"), 0, R"("unix_socket_filter": false, )");
    std::ofstream(dir_.path() / "tameflared.json") << config;
    std::ofstream(dir_.path() / "gateways.d" / "strict.json") << R"({"name": "strict",
               "require_layers": ["unix_socket_filter"],
               "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
    daemon_.emplace(TAMEFLARED_BINARY, dir_.path() / "tameflared.json", dir_.path() / "daemon2.log");
    ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();

    // A tmux server's directory of some user, as tmux makes it in /tmp.
    const fs::path tmux = "/tmp/tmux-" + std::to_string(4000000 + ::getpid());
    fs::create_directories(tmux);
    struct RemovedAtEnd {
        fs::path path;
        ~RemovedAtEnd() {
            std::error_code ignored;
            fs::remove_all(path, ignored);
        }
    } removed_at_end{tmux};
    fs::permissions(tmux, fs::perms::all);
    const UniqueFd server = listen_unix(tmux / "default");
    const std::string connect =
        "import socket, sys\n"
        "for path in sys.argv[1:]:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(path); print('connected')\n"
        "    except OSError as e: print(e.strerror)\n";
    const Result result = run(as_user(
        "65534", tf_run({"/bin/sh", "-c", "echo \"$TAMEFLARE_SANDBOX\"; exec /usr/bin/python3 -c \"$0\" \"$@\"",
                         connect, (tmux / "default").string(), (dir_.path() / "run" / "launch.sock").string()})));
    ASSERT_EQ(result.status, 0) << result.err << daemon_->log();
    EXPECT_NE(result.out.find("unix_socket_filter=fallback"), std::string::npos) << result.out;
    // The tmux directory is an empty tmpfs inside; tameflared's socket is /dev/null there.
    EXPECT_NE(result.out.find("No such file or directory\nConnection refused\n"), std::string::npos) << result.out;
    EXPECT_EQ(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC), -1);

    const Result refused = run(tf_run({"/bin/true"}, "", "strict"));
    EXPECT_EQ(refused.status, 125);
    EXPECT_NE(refused.err.find("requires the sandbox layer unix_socket_filter"), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find("tf doctor"), std::string::npos) << refused.err;
}

INSTANTIATE_TEST_SUITE_P(Isolation, AgentsTest, ::testing::Values("netns", "cgroup"));

}  // namespace
}  // namespace tameflare::testing
