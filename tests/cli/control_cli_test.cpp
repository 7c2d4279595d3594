// tf's control commands end to end: a real tameflared (explicit proxy only,
// its REST socket in a temporary directory) and the real tf, as a user runs
// it: tables and --json, a request held for approval and answered with tf,
// the kill switch, the logs, the event streams, and every way of failing
// with its exit status (1 refused, 2 usage, 3 unreachable).
#include "tests/cli/control_cli_fixture.h"

#include <poll.h>
#include <pty.h>
#include <termios.h>

#include <set>

namespace tameflare::testing {
namespace {

using namespace control_cli;  // NOLINT(google-build-using-namespace): the fixture's helpers

// tf on a pseudo-terminal, for what it does only on a terminal (colour, the
// interactive approvals watch). RAII: killed and reaped when it goes away.
class PtyProcess {
public:
    PtyProcess(std::vector<std::string> argv, std::vector<std::string> env) {
        // Everything the child needs is built before the fork.
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (auto& arg : argv) args.push_back(arg.data());
        args.push_back(nullptr);
        std::vector<char*> envp;
        envp.reserve(env.size() + 1);
        for (auto& variable : env) envp.push_back(variable.data());
        envp.push_back(nullptr);
        winsize size{};
        size.ws_row = 50;
        size.ws_col = 200;
        pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
        if (pid_ < 0) throw std::runtime_error("forkpty failed");
        if (pid_ == 0) {
            ::execve(args[0], args.data(), envp.data());
            _exit(127);
        }
        argv_ = std::move(argv);
        env_ = std::move(env);
    }
    PtyProcess(const PtyProcess&) = delete;
    PtyProcess& operator=(const PtyProcess&) = delete;
    ~PtyProcess() {
        if (!exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (master_ >= 0) ::close(master_);
    }

    bool wait_for(const std::string& needle, std::chrono::milliseconds timeout = 20s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!contains(output_.substr(from_), needle)) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !pump(static_cast<int>(left.count()))) return false;
        }
        from_ = output_.find(needle, from_) + needle.size();
        return true;
    }
    void type(const std::string& keys) const {
        ASSERT_EQ(::write(master_, keys.data(), keys.size()), static_cast<ssize_t>(keys.size()));
    }
    int wait() {
        while (pump(5000)) {
        }
        int status = 0;
        ::waitpid(pid_, &status, 0);
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    // The terminal's settings as the program left them.
    termios settings() const {
        termios now{};
        ::tcgetattr(master_, &now);
        return now;
    }
    const std::string& output() const { return output_; }

private:
    bool pump(int timeout_ms) {
        pollfd ready{master_, POLLIN, 0};
        if (::poll(&ready, 1, timeout_ms) <= 0) return false;
        char buffer[4096];
        const ssize_t n = ::read(master_, buffer, sizeof buffer);
        if (n <= 0) return false;  // EIO: the child closed the terminal
        output_.append(buffer, static_cast<std::size_t>(n));
        return true;
    }

    std::vector<std::string> argv_;
    std::vector<std::string> env_;
    pid_t pid_ = -1;
    int master_ = -1;
    bool exited_ = false;
    std::string output_;
    std::size_t from_ = 0;
};

TEST_F(ControlCli, StatusAsATableAndAsJson) {
    const auto table = tf({"status"});
    ASSERT_EQ(table.status, 0) << table.err;
    EXPECT_TRUE(contains(table.out, "tameflared 0.1.0")) << table.out;
    EXPECT_TRUE(contains(table.out, "explicit")) << table.out;
    EXPECT_TRUE(contains(table.out, "kill switch")) << table.out;
    EXPECT_TRUE(contains(table.out, "role owner")) << table.out;  // root
    EXPECT_FALSE(contains(table.out, "\x1b[")) << "no colour into a pipe";

    const auto document = tf({"status", "--json"});
    ASSERT_EQ(document.status, 0) << document.err;
    const auto status = json::parse(document.out);
    EXPECT_EQ(status["gateways"], 2);
    EXPECT_EQ(status["enforcement"], "explicit");
    EXPECT_EQ(status["caller"]["role"], "owner");
    EXPECT_EQ(status["kill_switch"]["active"], false);
}

TEST_F(ControlCli, TheSocketIsFoundThroughTheConfigurationAndTheEnvironment) {
    const auto by_config = run({TF_BINARY, "status", "-c", config().string(), "--json"});
    ASSERT_EQ(by_config.status, 0) << by_config.err;
    EXPECT_EQ(json::parse(by_config.out)["gateways"], 2);

    const auto by_env = run({"/usr/bin/env", "TAMEFLARE_API_SOCKET=" + socket_, TF_BINARY, "status", "--json"});
    ASSERT_EQ(by_env.status, 0) << by_env.err;

    // --socket wins over the environment.
    const auto given =
        run({"/usr/bin/env", "TAMEFLARE_API_SOCKET=/nonexistent/api.sock", TF_BINARY, "status", "--socket", socket_});
    EXPECT_EQ(given.status, 0) << given.err;

    const auto bad_config = run({TF_BINARY, "status", "-c", (root_ / "missing.json").string()});
    EXPECT_EQ(bad_config.status, 2) << bad_config.err;
}

TEST_F(ControlCli, GatewaysListShowAndSetEnforcement) {
    const auto list = tf({"gateways"});
    ASSERT_EQ(list.status, 0) << list.err;
    EXPECT_TRUE(contains(list.out, "NAME")) << list.out;
    EXPECT_TRUE(contains(list.out, "one")) << list.out;
    EXPECT_TRUE(contains(list.out, "two")) << list.out;
    EXPECT_TRUE(contains(list.out, "the test's gateway")) << list.out;

    const auto names = tf({"gateways", "list", "-q"});
    ASSERT_EQ(names.status, 0) << names.err;
    EXPECT_EQ(names.out, "one\ntwo\n");

    const auto show = tf({"gateways", "show", "one"});
    ASSERT_EQ(show.status, 0) << show.err;
    EXPECT_TRUE(contains(show.out, "plain.test")) << show.out;
    EXPECT_TRUE(contains(show.out, "http.put")) << show.out;

    const auto show_json = tf({"gateways", "show", "one", "--json"});
    ASSERT_EQ(show_json.status, 0) << show_json.err;
    EXPECT_EQ(json::parse(show_json.out)["name"], "one");

    const auto set = tf({"gateways", "set-enforcement", "one", "monitor"});
    ASSERT_EQ(set.status, 0) << set.err;
    EXPECT_TRUE(contains(set.out, "monitor")) << set.out;
    const auto after = tf({"gateways", "list", "--json"});
    ASSERT_EQ(after.status, 0) << after.err;
    const auto listed = json::parse(after.out);  // a named document: the loop must not range over a temporary's part
    for (const auto& gateway : listed["gateways"]) {
        EXPECT_EQ(gateway["enforcement"], gateway["name"] == "one" ? "monitor" : "full") << gateway;
    }
    // In monitor mode the DELETE the policy denies is forwarded and logged as would_deny.
    EXPECT_EQ(proxy_request(listen_, http::verb::delete_, url("/monitored")), 200U);

    const auto unknown = tf({"gateways", "show", "nope"});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_TRUE(unknown.err.starts_with("tf: ")) << unknown.err;
    EXPECT_TRUE(contains(unknown.err, "nope")) << unknown.err;
}

TEST_F(ControlCli, KillSwitchOnAndOffWithScopeAndReason) {
    const auto on = tf({"kill-switch", "on", "--scope", "gateway:one", "--reason", "incident 42"});
    ASSERT_EQ(on.status, 0) << on.err;
    EXPECT_TRUE(contains(on.out, "ON")) << on.out;
    EXPECT_TRUE(contains(on.out, "incident 42")) << on.out;
    EXPECT_EQ(proxy_request(listen_, http::verb::get, url("/while-killed")), 403U);

    const auto show = tf({"kill-switch", "--json"});
    ASSERT_EQ(show.status, 0) << show.err;
    const auto kill = json::parse(show.out);
    EXPECT_EQ(kill["active"], true);
    EXPECT_EQ(kill["gateways"], json::array({"one"}));
    EXPECT_EQ(kill["reason"], "incident 42");

    const auto status = tf({"status"});
    EXPECT_TRUE(contains(status.out, "ON for gateways one")) << status.out;

    const auto off = tf({"kill-switch", "off", "--scope", "gateway:one", "--reason", "resolved"});
    ASSERT_EQ(off.status, 0) << off.err;
    EXPECT_TRUE(contains(off.out, "off")) << off.out;
    EXPECT_EQ(proxy_request(listen_, http::verb::get, url("/after")), 200U);
}

TEST_F(ControlCli, AHeldRequestIsApprovedAndAnotherDenied) {
    auto approved = hold("/approve-me");
    const auto pending = wait_for_approvals(1);
    ASSERT_EQ(pending.size(), 1U) << pending;
    const std::string id = pending[0]["id"];

    const auto list = tf({"approvals"});
    ASSERT_EQ(list.status, 0) << list.err;
    EXPECT_TRUE(contains(list.out, id)) << list.out;
    EXPECT_TRUE(contains(list.out, "http.put")) << list.out;
    const auto show = tf({"approvals", "show", id});
    ASSERT_EQ(show.status, 0) << show.err;
    EXPECT_TRUE(contains(show.out, "gateway")) << show.out;
    EXPECT_TRUE(contains(show.out, "one")) << show.out;

    const auto approve = tf({"approvals", "approve", id, "--note", "looks fine"});
    ASSERT_EQ(approve.status, 0) << approve.err;
    EXPECT_TRUE(contains(approve.out, "approved " + id)) << approve.out;
    ASSERT_EQ(approved.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(approved.get(), 200U);
    EXPECT_TRUE(upstream_.wait_for_requests(1));

    // Answered already: the daemon refuses, tf says why.
    const auto again = tf({"approvals", "deny", id});
    EXPECT_EQ(again.status, 1) << again.err;
    EXPECT_TRUE(again.err.starts_with("tf: ")) << again.err;

    auto denied = hold("/deny-me");
    const auto second = wait_for_approvals(1);
    ASSERT_EQ(second.size(), 1U) << second;
    const auto deny = tf({"approvals", "deny", second[0]["id"], "--json"});
    ASSERT_EQ(deny.status, 0) << deny.err;
    EXPECT_EQ(json::parse(deny.out)["approved"], false);
    ASSERT_EQ(denied.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(denied.get(), 403U);
    EXPECT_EQ(upstream_.requests().size(), 1U);
}

TEST_F(ControlCli, UnknownApprovalIsRefusedWithTheApiMessage) {
    const auto result = tf({"approvals", "approve", "no-such-request"});
    EXPECT_EQ(result.status, 1);
    EXPECT_TRUE(result.err.starts_with("tf: ")) << result.err;
    EXPECT_TRUE(contains(result.err, "no-such-request")) << result.err;
    EXPECT_TRUE(result.out.empty()) << result.out;

    const auto json_error = tf({"approvals", "show", "no-such-request", "--json"});
    EXPECT_EQ(json_error.status, 1);
    EXPECT_EQ(json::parse(json_error.out)["error"], "unknown_approval") << json_error.out;
}

TEST_F(ControlCli, LogsLastNAsTableCsvAndJsonLines) {
    for (const auto* path : {"/one", "/two", "/three"}) {
        ASSERT_EQ(proxy_request(listen_, http::verb::get, url(path)), 200U);
    }
    ASSERT_EQ(proxy_request(listen_, http::verb::delete_, url("/refused")), 403U);

    // Rows are written by the store's writer thread: wait for the last one.
    Result jsonl;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    do {
        jsonl = tf({"logs", "--last", "3", "--format", "jsonl"});
    } while (jsonl.status == 0 && !contains(jsonl.out, "/refused") && std::chrono::steady_clock::now() < deadline);
    ASSERT_EQ(jsonl.status, 0) << jsonl.err;
    const auto rows = json_lines(jsonl.out);
    ASSERT_EQ(rows.size(), 3U) << jsonl.out;
    EXPECT_EQ(rows[0]["path"], "/two");
    EXPECT_EQ(rows[2]["path"], "/refused");
    EXPECT_EQ(rows[2]["decision"], "denied");

    const auto table = tf({"logs", "--last", "2"});
    ASSERT_EQ(table.status, 0) << table.err;
    EXPECT_TRUE(contains(table.out, "DECISION")) << table.out;
    EXPECT_TRUE(contains(table.out, "/three")) << table.out;
    EXPECT_TRUE(contains(table.out, "/refused")) << table.out;
    EXPECT_FALSE(contains(table.out, "/two")) << table.out;

    const auto csv = tf({"logs", "--format", "csv", "--decision", "denied"});
    ASSERT_EQ(csv.status, 0) << csv.err;
    EXPECT_TRUE(csv.out.starts_with("time,request_id,gateway,")) << csv.out;
    EXPECT_TRUE(contains(csv.out, "/refused")) << csv.out;
    EXPECT_FALSE(contains(csv.out, "/one")) << csv.out;

    const auto gateway_two = tf({"logs", "--gateway", "two"});
    ASSERT_EQ(gateway_two.status, 0) << gateway_two.err;
    EXPECT_TRUE(contains(gateway_two.out, "no matching records")) << gateway_two.out;
}

TEST_F(ControlCli, LogsFollowPrintsNewRowsAsTheyAreDecided) {
    ASSERT_EQ(proxy_request(listen_, http::verb::get, url("/history")), 200U);
    Subprocess follow(tf_argv({"logs", "-f", "--format", "jsonl", "--last", "0"}));
    // Requests until one shows: those decided before tf opened the stream
    // are in the history it prints first, never twice.
    for (int i = 0; i < 100 && !contains(follow.out(), "/followed"); ++i) {
        ASSERT_EQ(proxy_request(listen_, http::verb::get, url("/followed/" + std::to_string(i))), 200U);
        wait_for_stdout(follow, "/followed", 200ms);
    }
    ASSERT_TRUE(wait_for_stdout(follow, "/followed")) << follow.out() << follow.err();
    std::set<std::string> ids;
    for (const auto& line : json_lines(follow.out())) {
        EXPECT_TRUE(ids.insert(line["request_id"].get<std::string>()).second) << "twice: " << line;
        EXPECT_EQ(line["decision"], "allowed");
    }
    follow.signal(SIGTERM);
    EXPECT_EQ(follow.wait(), 128 + SIGTERM);
}

TEST_F(ControlCli, ApprovalsWatchWithoutATerminalPrintsJsonLines) {
    auto before = hold("/before-watch");
    ASSERT_EQ(wait_for_approvals(1).size(), 1U);
    Subprocess watch(tf_argv({"approvals", "watch"}));
    ASSERT_TRUE(wait_for_stdout(watch, "approval.pending")) << watch.out() << watch.err();

    auto during = hold("/during-watch");
    ASSERT_TRUE(wait_for_stdout(watch, "approval.requested")) << watch.out() << watch.err();
    const auto lines = json_lines(watch.out());
    ASSERT_EQ(lines.size(), 2U) << watch.out();
    EXPECT_EQ(lines[0]["event"], "approval.pending");
    EXPECT_EQ(lines[1]["event"], "approval.requested");
    EXPECT_EQ(lines[1]["data"]["gateway"], "one");
    const std::string id = lines[1]["data"]["id"];

    ASSERT_EQ(tf({"approvals", "deny", id}).status, 0);
    ASSERT_TRUE(wait_for_stdout(watch, "approval.resolved")) << watch.out();
    const auto resolved = json_lines(watch.out()).back();
    EXPECT_EQ(resolved["data"]["id"], id);
    EXPECT_EQ(resolved["data"]["approved"], false);
    EXPECT_EQ(during.get(), 403U);

    ASSERT_EQ(tf({"approvals", "deny", lines[0]["data"]["id"]}).status, 0);
    EXPECT_EQ(before.get(), 403U);
    watch.signal(SIGTERM);
    EXPECT_EQ(watch.wait(), 128 + SIGTERM);
}

TEST_F(ControlCli, ApprovalsWatchOnATerminalAnswersWithOneKey) {
    auto held = hold("/interactive");
    ASSERT_EQ(wait_for_approvals(1).size(), 1U);
    PtyProcess watch(tf_argv({"approvals", "watch", "--note", "from the terminal"}), {"NO_COLOR=1", "TERM=dumb"});
    ASSERT_TRUE(watch.wait_for("[a]pprove [d]eny [s]kip [q]uit?")) << watch.output();
    EXPECT_TRUE(contains(watch.output(), "/interactive") || contains(watch.output(), "http.put")) << watch.output();
    EXPECT_FALSE(contains(watch.output(), "\x1b[")) << "NO_COLOR is set";
    const auto raw = watch.settings();
    EXPECT_EQ(raw.c_lflag & (ICANON | ECHO), 0U) << "one key at a time, not echoed";
    watch.type("a");
    ASSERT_TRUE(watch.wait_for("approved")) << watch.output();
    ASSERT_EQ(held.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(held.get(), 200U);

    ASSERT_TRUE(watch.wait_for("No request is waiting")) << watch.output();
    watch.type("q");
    EXPECT_EQ(watch.wait(), 0) << watch.output();
    const auto restored = watch.settings();
    EXPECT_EQ(restored.c_lflag & (ICANON | ECHO), static_cast<tcflag_t>(ICANON | ECHO)) << "the terminal is restored";
}

TEST_F(ControlCli, ApprovalsWatchOnATerminalReconnectsWhenTheDaemonRestarts) {
    PtyProcess watch(tf_argv({"approvals", "watch"}), {"NO_COLOR=1", "TERM=dumb"});
    ASSERT_TRUE(watch.wait_for("No request is waiting")) << watch.output();
    restart();
    ASSERT_TRUE(watch.wait_for("reconnecting")) << watch.output();
    ASSERT_TRUE(watch.wait_for("reconnected")) << watch.output();

    auto held = hold("/after-restart");
    ASSERT_TRUE(watch.wait_for("[a]pprove [d]eny [s]kip [q]uit?")) << watch.output();
    // The daemon publishes approval.requested a moment before the request can
    // be answered (daemon/control/events.cpp): answer once it is listed.
    ASSERT_EQ(wait_for_approvals(1).size(), 1U);
    watch.type("d");
    ASSERT_TRUE(watch.wait_for("denied")) << watch.output();
    ASSERT_EQ(held.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(held.get(), 403U);
    watch.type("q");
    EXPECT_EQ(watch.wait(), 0) << watch.output();
    EXPECT_EQ(watch.settings().c_lflag & (ICANON | ECHO), static_cast<tcflag_t>(ICANON | ECHO));
}

TEST_F(ControlCli, ColourOnlyOnATerminalWithoutNoColor) {
    PtyProcess coloured(tf_argv({"status"}), {"TERM=xterm"});
    EXPECT_EQ(coloured.wait(), 0) << coloured.output();
    EXPECT_TRUE(contains(coloured.output(), "\x1b[")) << coloured.output();
    PtyProcess plain(tf_argv({"status"}), {"TERM=xterm", "NO_COLOR=1"});
    EXPECT_EQ(plain.wait(), 0) << plain.output();
    EXPECT_FALSE(contains(plain.output(), "\x1b[")) << plain.output();
}

TEST_F(ControlCli, MetricsAndReload) {
    const auto metrics = tf({"metrics"});
    ASSERT_EQ(metrics.status, 0) << metrics.err;
    EXPECT_TRUE(contains(metrics.out, "tameflare_requests_total")) << metrics.out;

    const auto reload = tf({"reload"});
    ASSERT_EQ(reload.status, 0) << reload.err;
    EXPECT_TRUE(contains(reload.out, "reloaded")) << reload.out;

    // A broken gateway file: refused, every error printed, the old configuration stays.
    std::ofstream(root_ / "gateways.d" / "broken.json") << R"({"name": "broken", "connectors": 7})";
    const auto refused = tf({"reload"});
    EXPECT_EQ(refused.status, 1) << refused.out << refused.err;
    EXPECT_TRUE(contains(refused.err, "broken.json")) << refused.err;
    const auto still = tf({"status", "--json"});
    EXPECT_EQ(json::parse(still.out)["gateways"], 2);
}

TEST_F(ControlCli, AUserWithoutARoleIsRefusedAndToldWhichGroup) {
    if (::geteuid() != 0) GTEST_SKIP() << "setpriv to another uid needs root";
    const auto result = run({"/usr/bin/setpriv", std::string("--reuid=") + kNobody, std::string("--regid=") + kNobody,
                             "--clear-groups", "--", TF_BINARY, "status", "--socket", socket_});
    EXPECT_EQ(result.status, 1) << result.out << result.err;
    EXPECT_TRUE(result.err.starts_with("tf: ")) << result.err;
    EXPECT_TRUE(contains(result.err, "4244")) << result.err;  // the viewer group
    EXPECT_TRUE(contains(result.err, "hint: ")) << result.err;

    // Its own agents (none) it may list.
    const auto agents = run({"/usr/bin/setpriv", std::string("--reuid=") + kNobody, std::string("--regid=") + kNobody,
                             "--clear-groups", "--", TF_BINARY, "agents", "--json", "--socket", socket_});
    EXPECT_EQ(agents.status, 0) << agents.err;
}

TEST_F(ControlCli, NoPermissionOnTheSocketNamesTheGroup) {
    if (::geteuid() != 0) GTEST_SKIP() << "setpriv to another uid needs root";
    fs::permissions(socket_, fs::perms::owner_read | fs::perms::owner_write);
    const auto result = run({"/usr/bin/setpriv", std::string("--reuid=") + kNobody, std::string("--regid=") + kNobody,
                             "--clear-groups", "--", TF_BINARY, "status", "--socket", socket_});
    EXPECT_EQ(result.status, 3) << result.err;
    EXPECT_TRUE(contains(result.err, "permission denied on " + socket_)) << result.err;
    EXPECT_TRUE(contains(result.err, "you are not in group")) << result.err;
}

TEST(ControlCliWithoutDaemon, NoDaemonIsExitThreeWithWhatToDo) {
    const TempDir dir("tf-control-cli-none");
    const std::string socket = (dir.path() / "api.sock").string();
    for (const std::vector<std::string>& command :
         {std::vector<std::string>{"status"}, {"gateways", "list"}, {"approvals", "watch"}, {"logs", "-f"}}) {
        std::vector<std::string> argv{TF_BINARY};
        argv.insert(argv.end(), command.begin(), command.end());
        argv.insert(argv.end(), {"--socket", socket});
        const auto result = run(argv);
        EXPECT_EQ(result.status, 3) << command[0] << ": " << result.err;
        EXPECT_TRUE(contains(result.err, "tameflared is not running or its API socket is elsewhere: " + socket))
            << result.err;
        EXPECT_TRUE(contains(result.err, "systemctl start tameflared")) << result.err;
        EXPECT_TRUE(contains(result.err, "--socket")) << result.err;
    }
}

TEST(ControlCliWithoutDaemon, UsageErrorsAreExitTwo) {
    const std::vector<std::vector<std::string>> wrong = {
        {"status", "extra"},
        {"status", "--bogus"},
        {"gateways", "frobnicate"},
        {"gateways", "show"},
        {"gateways", "set-enforcement", "one", "loud"},
        {"gateways", "show", "one", "--quiet"},
        {"agents", "stop"},
        {"approvals", "approve"},
        {"approvals", "list", "--note", "x"},
        {"kill-switch", "on", "--scope", "everything"},
        {"kill-switch", "on", "--scope", "gateway:"},
        {"kill-switch", "show", "--reason", "x"},
        {"kill-switch", "sideways"},
        {"logs", "--last", "many"},
        {"logs", "--since", "yesterday"},
        {"logs", "--format", "xml"},
        {"logs", "-f", "--until", "1h"},
        {"logs", "--json", "--format", "csv"},
        {"metrics", "--json"},
        {"reload", "--socket"},
    };
    for (const auto& command : wrong) {
        std::vector<std::string> argv{TF_BINARY};
        argv.insert(argv.end(), command.begin(), command.end());
        const auto result = run(argv);
        std::string line;
        for (const auto& word : command) line += word + " ";
        EXPECT_EQ(result.status, 2) << line << "\n" << result.err;
        EXPECT_TRUE(contains(result.err, "--help")) << line << "\n" << result.err;
    }
}

TEST(ControlCliWithoutDaemon, EveryCommandHasHelp) {
    for (const auto* command :
         {"status", "gateways", "reload", "agents", "approvals", "kill-switch", "logs", "metrics"}) {
        const auto result = run({TF_BINARY, command, "--help"});
        EXPECT_EQ(result.status, 0) << command;
        EXPECT_TRUE(contains(result.out, std::string("Usage: tf ") + command)) << result.out;
        EXPECT_TRUE(contains(result.out, "Exit status")) << result.out;
        EXPECT_TRUE(contains(result.out, "--socket")) << result.out;
    }
    const auto top = run({TF_BINARY, "--help"});
    for (const auto* command : {"status", "kill-switch", "approvals", "logs"}) {
        EXPECT_TRUE(contains(top.out, command)) << top.out;
    }
}

// The bash completion script, driven as bash drives it.
std::string complete(const std::string& line) {
    const std::string script =
        "source \"$0\"; COMP_LINE=$1; COMP_POINT=${#COMP_LINE}; _tf; printf '%s\\n' "
        "\"${COMPREPLY[@]}\"";
    const auto result = run({"/bin/bash", "-c", script, std::string(TF_SOURCE_DIR) + "/cli/completion/tf.bash", line});
    return result.out;
}

TEST(ControlCliWithoutDaemon, BashCompletion) {
    EXPECT_TRUE(contains(complete("tf "), "kill-switch\n")) << complete("tf ");
    EXPECT_TRUE(contains(complete("tf "), "traffic\n"));
    EXPECT_EQ(complete("tf appr"), "approvals\n");
    EXPECT_EQ(complete("tf approvals "), "list\nshow\napprove\ndeny\nwatch\n");
    EXPECT_EQ(complete("tf gateways set-enforcement one "), "monitor\nsoft\nfull\ndefault\n");
    EXPECT_EQ(complete("tf logs --format=j"), "jsonl\n");
    EXPECT_EQ(complete("tf logs --decision den"), "denied\n");
    EXPECT_TRUE(contains(complete("tf logs --f"), "--follow\n")) << complete("tf logs --f");
    EXPECT_TRUE(contains(complete("tf kill-switch on --"), "--scope\n"));
    EXPECT_TRUE(contains(complete("tf kill-switch on --scope "), "all\n"));
}

TEST_F(ControlCli, BashCompletionAsksTheDaemonForNames) {
    // The line's first word is the tf that is asked.
    const std::string tf = TF_BINARY;
    EXPECT_EQ(complete(tf + " gateways --socket " + socket_ + " show "), "one\ntwo\n");
    // After gateway: only the name is replaced (':' breaks words in bash).
    EXPECT_EQ(complete(tf + " kill-switch on --socket " + socket_ + " --scope gateway:t"), "two\n");
}

}  // namespace
}  // namespace tameflare::testing
