// tf's vault, log and policy commands through a running tameflared (its REST
// socket) as a user runs them, checked against the offline forms on the same
// files (--state-dir, -c FILE): the same answers, printed the same way. And
// the event streams of tf logs -f and tf approvals watch across a restart of
// the daemon.
#include "tests/cli/control_cli_fixture.h"
#include "tests/support/run_as.h"

#include <sys/wait.h>

#include <set>

namespace tameflare::testing {
namespace {

using namespace control_cli;  // NOLINT(google-build-using-namespace): the fixture's helpers

constexpr const char* kToken = "ghp_0123456789abcdefghijXY";
// A uid with no role group and no other group.
constexpr unsigned kNoRole = 4250;

class OnlineCli : public ControlCli {
protected:
    // tf ARGS... --socket S with `input` on standard input, as `who` when given.
    Result tf_with_input(std::vector<std::string> args, const std::string& input,
                         const std::optional<Identity>& who = std::nullopt) const {
        const fs::path file = root_ / ("stdin." + std::to_string(++inputs_));
        std::ofstream(file, std::ios::binary) << input;
        args = tf_argv(std::move(args));
        if (who) args = as(*who, args);
        // The shell only redirects standard input (as root, before setpriv); "$@" is the command.
        std::vector<std::string> shell = {"/bin/sh", "-c", "exec \"$@\" < \"$0\"", file.string()};
        shell.insert(shell.end(), args.begin(), args.end());
        return run(shell);
    }
    // tf ARGS... without --socket (offline forms, or -c FILE).
    static Result tf_plain(std::vector<std::string> args) {
        args.insert(args.begin(), TF_BINARY);
        return run(args);
    }
    fs::path state() const { return root_ / "state"; }

    // Until the traffic log (through the daemon) has a row for `path`.
    bool wait_for_row(const std::string& path) const {
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto rows = tf({"traffic", "query", "--format", "jsonl", "--limit", "0"});
            if (rows.status == 0 && contains(rows.out, path)) return true;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }

private:
    mutable int inputs_ = 0;
};

bool running(pid_t pid) {
    int status = 0;
    return ::waitpid(pid, &status, WNOHANG) == 0;
}

// ---------------------------------------------------------------------------
// vault

TEST_F(OnlineCli, VaultSetListRotateRemoveThroughTheDaemon) {
    const auto set =
        tf_with_input({"vault", "set", "github_token", "--connector", "github"}, std::string(kToken) + "\n");
    ASSERT_EQ(set.status, 0) << set.err;
    EXPECT_EQ(set.out, "stored github_token (ghp_****XY) for connector github\n");
    EXPECT_FALSE(contains(set.out + set.err, "0123456789")) << set.out << set.err;

    const auto list = tf({"vault", "list"});
    ASSERT_EQ(list.status, 0) << list.err;
    EXPECT_TRUE(contains(list.out, "NAME")) << list.out;
    EXPECT_TRUE(contains(list.out, "github_token")) << list.out;
    EXPECT_TRUE(contains(list.out, "ghp_****XY")) << list.out;
    EXPECT_FALSE(contains(list.out, kToken)) << list.out;

    // The same list as the files show it (the database is read while the daemon runs).
    const auto listed = tf({"vault", "list", "--json"});
    ASSERT_EQ(listed.status, 0) << listed.err;
    const auto offline = tf_plain({"vault", "list", "--json", "--state-dir", state().string()});
    ASSERT_EQ(offline.status, 0) << offline.err;
    EXPECT_EQ(listed.out, offline.out);
    const auto entries = json::parse(listed.out);
    ASSERT_EQ(entries.size(), 1U) << listed.out;
    EXPECT_EQ(entries[0]["name"], "github_token");
    EXPECT_EQ(entries[0]["connector"], "github");
    EXPECT_EQ(entries[0]["hint"], "ghp_****XY");
    EXPECT_EQ(tf_plain({"vault", "list", "--state-dir", state().string()}).out, list.out);

    // The daemon rotates while it runs (tf vault rotate --state-dir would refuse).
    const auto rotate = tf({"vault", "rotate"});
    ASSERT_EQ(rotate.status, 0) << rotate.err;
    EXPECT_TRUE(contains(rotate.out, "re-encrypted 1 value")) << rotate.out;
    EXPECT_TRUE(contains(tf({"vault", "list"}).out, "ghp_****XY"));

    const auto removed = tf({"vault", "remove", "github_token"});
    ASSERT_EQ(removed.status, 0) << removed.err;
    EXPECT_EQ(removed.out, "removed github_token\n");
    EXPECT_FALSE(contains(tf({"vault", "list"}).out, "github_token"));
    const auto again = tf({"vault", "remove", "github_token"});
    EXPECT_EQ(again.status, 1);
    EXPECT_TRUE(again.err.starts_with("tf: ")) << again.err;
    EXPECT_TRUE(contains(again.err, "github_token")) << again.err;
    EXPECT_TRUE(contains(again.err, "hint: ")) << again.err;

    // Each change is in the audit log, with the caller and how it called.
    const auto audit = tf({"audit", "query", "--event", "vault.", "--format", "jsonl"});
    ASSERT_EQ(audit.status, 0) << audit.err;
    const auto records = json_lines(audit.out);
    ASSERT_EQ(records.size(), 3U) << audit.out;
    EXPECT_EQ(records[0]["event"], "vault.set");
    EXPECT_EQ(records[0]["subject"], "github_token");
    EXPECT_EQ(records[1]["event"], "vault.rotated");
    EXPECT_EQ(records[2]["event"], "vault.removed");
    for (const auto& record : records) {
        const std::string actor = record["actor"];
        EXPECT_TRUE(actor.starts_with("uid:0 ")) << actor;
        EXPECT_TRUE(contains(actor, "via rest")) << actor;
    }
    EXPECT_FALSE(contains(audit.out, "0123456789")) << audit.out;
}

TEST_F(OnlineCli, VaultIsRefusedWithoutTheAdminRole) {
    if (::geteuid() != 0) GTEST_SKIP() << "setpriv to another uid needs root";
    const Identity nobody{kNoRole, ""};
    const auto set = tf_with_input({"vault", "set", "stolen"}, kToken, nobody);
    EXPECT_EQ(set.status, 1) << set.out << set.err;
    EXPECT_TRUE(set.err.starts_with("tf: ")) << set.err;
    EXPECT_TRUE(contains(set.err, "4242")) << set.err;  // the admin group
    EXPECT_TRUE(contains(set.err, "hint: ")) << set.err;
    EXPECT_FALSE(contains(set.out + set.err, "0123456789")) << set.err;

    const auto list = tf_with_input({"vault", "list"}, "", nobody);
    EXPECT_EQ(list.status, 1) << list.err;
    EXPECT_TRUE(contains(list.err, "4242")) << list.err;
    EXPECT_FALSE(contains(tf({"vault", "list"}).out, "stolen"));

    // A viewer reads the logs, not the vault.
    const Identity viewer{kNoRole, "4244"};
    EXPECT_EQ(tf_with_input({"audit", "query"}, "", viewer).status, 0);
    EXPECT_EQ(tf_with_input({"vault", "rotate"}, "", viewer).status, 1);
}

TEST_F(OnlineCli, AStoppedDaemonIsExitThreeWithTheOfflineForm) {
    ASSERT_EQ(tf_with_input({"vault", "set", "kept"}, kToken).status, 0);
    stop();
    for (const std::vector<std::string>& command :
         {std::vector<std::string>{"vault", "list"}, {"vault", "rotate"}, {"traffic", "query"}, {"audit", "verify"}}) {
        const auto result = tf(command);
        EXPECT_EQ(result.status, 3) << command[0] << " " << command[1] << ": " << result.err;
        EXPECT_TRUE(contains(result.err, "tameflared is not running or its API socket is elsewhere: " + socket_))
            << result.err;
        EXPECT_TRUE(contains(result.err, "hint: when tameflared is stopped, tf " + command[0] + " " + command[1]))
            << result.err;
        EXPECT_TRUE(contains(result.err, "--state-dir /var/lib/tameflare")) << result.err;
    }
    // The socket found through -c FILE: the hint names that configuration's state directory.
    const auto by_config = tf_plain({"vault", "list", "-c", config().string()});
    EXPECT_EQ(by_config.status, 3) << by_config.err;
    EXPECT_TRUE(contains(by_config.err, "--state-dir " + state().string())) << by_config.err;
    // Typing a value for a daemon that is not there is not asked for.
    const auto set = tf_with_input({"vault", "set", "late"}, kToken);
    EXPECT_EQ(set.status, 3) << set.err;
    EXPECT_TRUE(contains(set.err, "tf vault set NAME --state-dir")) << set.err;

    const auto check = tf({"policy", "check"});
    EXPECT_EQ(check.status, 3) << check.err;
    EXPECT_TRUE(contains(check.err, "-c /etc/tameflare/tameflared.json")) << check.err;
    const auto test = tf({"policy", "test", "--gateway", "one", "GET " + url("/x")});
    EXPECT_EQ(test.status, 3) << test.err;
    EXPECT_TRUE(contains(test.err, "-c /etc/tameflare/tameflared.json")) << test.err;

    // The files, directly.
    const auto offline = tf_plain({"vault", "list", "--state-dir", state().string()});
    EXPECT_EQ(offline.status, 0) << offline.err;
    EXPECT_TRUE(contains(offline.out, "kept")) << offline.out;
    const auto verify = tf_plain({"audit", "verify", "--state-dir", state().string()});
    EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
}

// ---------------------------------------------------------------------------
// logs

TEST_F(OnlineCli, TrafficAndAuditThroughTheDaemonAsTheFilesShowThem) {
    ASSERT_EQ(proxy_request(listen_, http::verb::get, url("/listed")), 200U);
    ASSERT_EQ(proxy_request(listen_, http::verb::delete_, url("/refused")), 403U);
    ASSERT_TRUE(wait_for_row("/refused"));
    ASSERT_EQ(tf_with_input({"vault", "set", "audited"}, kToken).status, 0);

    // Every form, through the daemon and from the database: the same bytes.
    const std::vector<std::vector<std::string>> forms = {
        {"traffic", "query"},
        {"traffic", "query", "--format", "csv"},
        {"traffic", "query", "--format", "jsonl", "--decision", "denied"},
        {"traffic", "export", "--format", "csv"},
        {"audit", "query", "--limit", "0"},
        {"audit", "export", "--format", "jsonl"},
        {"audit", "export", "--format", "csv", "--event", "vault."},
    };
    for (const auto& form : forms) {
        const auto online = tf(form);
        auto offline_args = form;
        offline_args.insert(offline_args.end(), {"--state-dir", state().string()});
        const auto offline = tf_plain(offline_args);
        std::string line;
        for (const auto& word : form) line += word + " ";
        ASSERT_EQ(online.status, 0) << line << online.err;
        ASSERT_EQ(offline.status, 0) << line << offline.err;
        EXPECT_EQ(online.out, offline.out) << line;
    }
    const auto csv = tf({"traffic", "export", "--format", "csv"});
    EXPECT_TRUE(csv.out.starts_with("time,request_id,gateway,")) << csv.out;
    EXPECT_TRUE(contains(csv.out, "/listed")) << csv.out;
    const auto denied = json_lines(tf({"traffic", "query", "--format", "jsonl", "--decision", "denied"}).out);
    ASSERT_EQ(denied.size(), 1U);
    EXPECT_EQ(denied[0]["path"], "/refused");

    // The vault set shows as an audit event naming its caller.
    const auto audit = tf({"audit", "export", "--format", "csv", "--event", "vault.set"});
    ASSERT_EQ(audit.status, 0) << audit.err;
    EXPECT_TRUE(audit.out.starts_with("seq,time,event,")) << audit.out;
    EXPECT_TRUE(contains(audit.out, "vault.set")) << audit.out;
    EXPECT_TRUE(contains(audit.out, "audited")) << audit.out;
    EXPECT_TRUE(contains(audit.out, "via rest (PUT /v1/vault/audited)")) << audit.out;

    // An export to a file, written whole.
    const auto file = root_ / "audit.jsonl";
    const auto exported = tf({"audit", "export", "--format", "jsonl", "--output", file.string()});
    ASSERT_EQ(exported.status, 0) << exported.err;
    EXPECT_TRUE(contains(exported.err, "written to " + file.string())) << exported.err;
    EXPECT_EQ(slurp(file), tf({"audit", "export", "--format", "jsonl"}).out);
    EXPECT_EQ(tf({"audit", "export", "--format", "jsonl", "--output", file.string()}).status, 2)
        << "kept without --force";

    const auto verify = tf({"audit", "verify"});
    ASSERT_EQ(verify.status, 0) << verify.out << verify.err;
    EXPECT_TRUE(verify.out.starts_with("audit log OK: ")) << verify.out;

    const auto empty = tf({"traffic", "query", "--gateway", "two"});
    ASSERT_EQ(empty.status, 0) << empty.err;
    EXPECT_TRUE(contains(empty.out, "(no matching records)")) << empty.out;

    // Filters go to the daemon as they are given.
    const auto filtered = tf({"audit", "query", "--event", "vault.", "--since", "1h", "--format", "jsonl"});
    ASSERT_EQ(filtered.status, 0) << filtered.err;
    EXPECT_EQ(json_lines(filtered.out).size(), 1U) << filtered.out;
    const auto before = tf({"audit", "query", "--until", "2000-01-01T00:00:00Z", "--format", "jsonl"});
    ASSERT_EQ(before.status, 0) << before.err;
    EXPECT_EQ(before.out, "");
}

TEST_F(OnlineCli, LogsFollowReconnectsWhenTheDaemonRestarts) {
    Subprocess follow(tf_argv({"logs", "-f", "--format", "jsonl", "--last", "0"}));
    for (int i = 0; i < 100 && !contains(follow.out(), "/before"); ++i) {
        ASSERT_EQ(proxy_request(listen_, http::verb::get, url("/before/" + std::to_string(i))), 200U);
        wait_for_stdout(follow, "/before", 200ms);
    }
    ASSERT_TRUE(wait_for_stdout(follow, "/before")) << follow.out() << follow.err();

    restart();
    ASSERT_TRUE(follow.wait_for_stderr("reconnecting")) << follow.err();
    ASSERT_TRUE(follow.wait_for_stderr("reconnected")) << follow.err();
    ASSERT_TRUE(running(follow.pid())) << follow.err();

    ASSERT_EQ(proxy_request(listen_, http::verb::get, url("/after-restart")), 200U);
    ASSERT_TRUE(wait_for_stdout(follow, "/after-restart")) << follow.out() << follow.err();
    EXPECT_TRUE(running(follow.pid()));
    std::set<std::string> ids;
    for (const auto& line : json_lines(follow.out())) {
        EXPECT_TRUE(ids.insert(line["request_id"].get<std::string>()).second) << "twice: " << line;
    }
    follow.signal(SIGTERM);
    EXPECT_EQ(follow.wait(), 128 + SIGTERM);
}

TEST_F(OnlineCli, ApprovalsWatchReconnectsAndListsWhatIsPending) {
    auto before = hold("/before-restart");
    const auto first = wait_for_approvals(1);
    ASSERT_EQ(first.size(), 1U) << first;
    Subprocess watch(tf_argv({"approvals", "watch"}));
    ASSERT_TRUE(wait_for_stdout(watch, "approval.pending")) << watch.out() << watch.err();
    ASSERT_EQ(tf({"approvals", "deny", first[0]["id"]}).status, 0);
    ASSERT_TRUE(wait_for_stdout(watch, "approval.resolved")) << watch.out();
    EXPECT_EQ(before.get(), 403U);

    restart();
    ASSERT_TRUE(watch.wait_for_stderr("reconnected")) << watch.err();
    ASSERT_TRUE(running(watch.pid())) << watch.err();

    auto after = hold("/after-restart");
    const auto second = wait_for_approvals(1);
    ASSERT_EQ(second.size(), 1U) << second;
    const std::string id = second[0]["id"];
    ASSERT_TRUE(wait_for_stdout(watch, id)) << watch.out() << watch.err();
    const auto lines = json_lines(watch.out());
    const auto shown = std::count_if(lines.begin(), lines.end(), [&id](const json& line) {
        return line["data"]["id"] == id &&
               (line["event"] == "approval.requested" || line["event"] == "approval.pending");
    });
    EXPECT_EQ(shown, 1) << watch.out();
    ASSERT_EQ(tf({"approvals", "deny", id}).status, 0);
    EXPECT_EQ(after.get(), 403U);
    EXPECT_TRUE(running(watch.pid()));
    watch.signal(SIGTERM);
    EXPECT_EQ(watch.wait(), 128 + SIGTERM);
}

// ---------------------------------------------------------------------------
// policy

TEST_F(OnlineCli, PolicyCheckAndTestThroughTheDaemonAgreeWithTheFiles) {
    const auto check = tf({"policy", "check"});
    ASSERT_EQ(check.status, 0) << check.err;
    EXPECT_TRUE(check.out.starts_with("configuration OK")) << check.out;
    const auto local_check = tf_plain({"policy", "check", "-c", config().string()});
    ASSERT_EQ(local_check.status, 0) << local_check.err;
    EXPECT_TRUE(local_check.out.starts_with("configuration OK")) << local_check.out;

    for (const auto* request : {"GET /read", "PUT /write", "DELETE /gone"}) {
        const std::string line = std::string(request).substr(0, std::string(request).find(' ')) + " " +
                                 url(std::string(request).substr(std::string(request).find(' ') + 1));
        for (const auto* form : {"", "--json"}) {
            std::vector<std::string> args{"policy", "test", "--gateway", "one", line};
            if (*form != '\0') args.emplace_back(form);
            const auto online = tf(args);
            args.insert(args.end(), {"-c", config().string()});
            const auto local = tf_plain(args);
            ASSERT_EQ(online.status, 0) << line << online.err;
            ASSERT_EQ(local.status, 0) << line << local.err;
            EXPECT_EQ(online.out, local.out) << line;
        }
    }
    // A body and its type go with the request.
    const std::vector<std::string> with_body{"policy", "test",   "--gateway",   "one",
                                             "--json", "--body", R"({"a": 1})", "PUT " + url("/b")};
    const auto body_online = tf(with_body);
    auto body_args = with_body;
    body_args.insert(body_args.end(), {"-c", config().string()});
    EXPECT_EQ(body_online.status, 0) << body_online.err;
    EXPECT_EQ(body_online.out, tf_plain(body_args).out);

    const auto held = json::parse(tf({"policy", "test", "--gateway", "one", "--json", "PUT " + url("/w")}).out);
    EXPECT_EQ(held["decision"], "pending_approval");
    EXPECT_EQ(held["actions"][0]["action"], "http.put");
    EXPECT_EQ(tf({"policy", "test", "--gateway", "one", "--exit-code", "DELETE " + url("/d")}).status, 1);
    EXPECT_EQ(tf({"policy", "test", "--gateway", "one", "--exit-code", "GET " + url("/d")}).status, 0);

    // --requests FILE: one call per line, the same table.
    const auto requests = root_ / "requests.txt";
    std::ofstream(requests) << "# a comment\nGET " << url("/a") << "\nPUT " << url("/b") << " {\"x\": 1}\n\nDELETE "
                            << url("/c") << "\nGET http://other.test/\n";
    const auto table = tf({"policy", "test", "--gateway", "one", "--requests", requests.string(), "--exit-code"});
    EXPECT_EQ(table.status, 1) << table.err;
    const auto local_table = tf_plain({"policy", "test", "--gateway", "one", "--requests", requests.string(),
                                       "--exit-code", "-c", config().string()});
    EXPECT_EQ(local_table.status, 1) << local_table.err;
    EXPECT_EQ(table.out, local_table.out);
    EXPECT_TRUE(contains(table.out, "pending_approval")) << table.out;
    EXPECT_TRUE(contains(table.out, "http.delete")) << table.out;

    // Run-time state is the daemon's: a monitored gateway forwards what it would deny.
    ASSERT_EQ(tf({"gateways", "set-enforcement", "one", "monitor"}).status, 0);
    const auto monitored = json::parse(tf({"policy", "test", "--gateway", "one", "--json", "DELETE " + url("/d")}).out);
    EXPECT_EQ(monitored["decision"], "would_deny") << monitored;
    EXPECT_EQ(json::parse(tf_plain({"policy", "test", "--gateway", "one", "--json", "-c", config().string(),
                                    "DELETE " + url("/d")})
                              .out)["decision"],
              "denied");

    // The daemon refuses an unknown gateway: its message, exit 1.
    const auto unknown = tf({"policy", "test", "--gateway", "nope", "GET " + url("/")});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_TRUE(unknown.err.starts_with("tf: ")) << unknown.err;
    EXPECT_TRUE(contains(unknown.err, "nope")) << unknown.err;

    // A broken file on disk: the daemon's check and the local one name it.
    std::ofstream(root_ / "gateways.d" / "broken.json") << R"({"name": "broken", "connectors": 7})";
    const auto broken = tf({"policy", "check"});
    EXPECT_EQ(broken.status, 1) << broken.out;
    EXPECT_TRUE(contains(broken.err, "broken.json")) << broken.err;
    EXPECT_TRUE(contains(broken.err, "configuration invalid: ")) << broken.err;
    const auto local_broken = tf_plain({"policy", "check", "-c", config().string()});
    EXPECT_EQ(local_broken.status, 1);
    EXPECT_TRUE(contains(local_broken.err, "broken.json")) << local_broken.err;
}

// ---------------------------------------------------------------------------

TEST(OnlineCliWithoutDaemon, UsageErrorsAreExitTwoBeforeAnyCall) {
    const TempDir dir("tf-online-cli");
    const std::string socket = (dir.path() / "api.sock").string();
    const std::vector<std::vector<std::string>> wrong = {
        {"vault", "set"},
        {"vault", "remove"},
        {"vault", "set", "bad/name"},
        {"vault", "list", "--bogus"},
        {"vault", "list", "--state-dir", "/nonexistent"},  // --socket and --state-dir
        {"traffic", "query", "--bogus"},
        {"traffic", "query", "--format", "xml"},
        {"audit", "query", "--decision", "denied"},
        {"audit", "verify", "--key", "audit.key"},
        {"policy", "check", "extra"},
        {"policy", "check", "-c", "/etc/tameflare/tameflared.json"},  // --socket and files
        {"policy", "test", "--gateway", "one", "--agent", "bot", "GET https://api.github.com/"},
        {"policy", "test", "--gateway", "one", "GET"},
        {"policy", "test", "GET https://api.github.com/"},
    };
    for (const auto& command : wrong) {
        std::vector<std::string> argv{TF_BINARY};
        argv.insert(argv.end(), command.begin(), command.end());
        argv.insert(argv.end(), {"--socket", socket});
        const auto result = run(argv);
        std::string line;
        for (const auto& word : command) line += word + " ";
        EXPECT_EQ(result.status, 2) << line << "\n" << result.err;
    }
}

TEST(OnlineCliWithoutDaemon, HelpSaysWhichWayEachCommandGoes) {
    for (const std::vector<std::string>& command : {std::vector<std::string>{"vault", "--help"},
                                                    {"traffic", "query", "--help"},
                                                    {"audit", "verify", "--help"},
                                                    {"policy", "test", "--help"},
                                                    {"policy", "check", "--help"}}) {
        std::vector<std::string> argv{TF_BINARY};
        argv.insert(argv.end(), command.begin(), command.end());
        const auto result = run(argv);
        EXPECT_EQ(result.status, 0) << command[0];
        EXPECT_TRUE(contains(result.out, "--socket")) << result.out;
        EXPECT_TRUE(contains(result.out, command[0] == "policy" ? "-c, --config FILE" : "--state-dir")) << result.out;
        EXPECT_TRUE(contains(result.out, "3 tameflared cannot be reached")) << result.out;
    }
}

}  // namespace
}  // namespace tameflare::testing
