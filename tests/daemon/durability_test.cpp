// The store's promises, held by the real tameflared binary: a request that
// reached an upstream has its traffic row even after kill -9 under load; a
// full disk makes the proxy refuse rather than forward unlogged; a tripped
// kill switch and pending approvals are remembered across a restart.
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "daemon/control/kill_switch.h"
#include "daemon/dataplane/local.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/store/audit.h"
#include "daemon/store/store.h"
#include "daemon/store_services.h"
#include "tests/support/daemon_process.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_upstream.h"

#include <sys/mount.h>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;
namespace http = boost::beast::http;
using net::ip::tcp;
using namespace std::chrono_literals;

// "one:token" in base64; the gateway stores sha256("token").
constexpr const char* kProxyAuthorization = "Basic b25lOnRva2Vu";
constexpr const char* kTokenSha256 = "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0";

struct Reply {
    unsigned status = 0;
    std::string request_id;
    std::string error;  // empty unless the proxy answered with one
};

// One keep-alive client connection to the explicit proxy.
class ProxyClient {
public:
    explicit ProxyClient(const std::string& listen) {
        const auto colon = listen.rfind(':');
        endpoint_ = tcp::endpoint(net::ip::make_address(listen.substr(0, colon)),
                                  static_cast<unsigned short>(std::stoi(listen.substr(colon + 1))));
    }
    // nullopt when the connection failed (the daemon is gone).
    std::optional<Reply> get(const std::string& url) {
        boost::system::error_code error;
        if (!socket_.is_open()) {
            socket_.connect(endpoint_, error);
            if (error) {
                socket_.close(error);
                return std::nullopt;
            }
        }
        http::request<http::empty_body> request{http::verb::get, url, 11};
        request.set(http::field::host, url.substr(7, url.find('/', 7) - 7));
        request.set(http::field::proxy_authorization, kProxyAuthorization);
        request.keep_alive(true);
        http::write(socket_, request, error);
        http::response<http::string_body> response;
        if (!error) http::read(socket_, buffer_, response, error);
        if (error) {
            socket_.close(error);
            return std::nullopt;
        }
        if (!response.keep_alive()) socket_.close(error);
        Reply reply{response.result_int(), std::string(response["X-TameFlare-Request-Id"]), {}};
        if (response.result_int() >= 400) {
            const auto body = nlohmann::json::parse(response.body(), nullptr, false);
            if (body.is_object()) reply.error = body.value("error", std::string(body.value("decision", "")));
        }
        return reply;
    }

private:
    net::io_context io_;
    tcp::socket socket_{io_};
    tcp::endpoint endpoint_;
    boost::beast::flat_buffer buffer_;
};

class Durability : public ::testing::Test {
protected:
    void write_config(const fs::path& state_dir, const std::string& extra = "") {
        fs::create_directories(root_ / "gateways.d");
        std::ofstream(root_ / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": ")"
            << state_dir.string() << R"(", "runtime_dir": "run", "agents": {"enabled": false},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false, "allowed_upstreams": ["127.0.0.1"],
                            "hosts": {"plain.test": ["127.0.0.1"]}})"
            << extra << "}";
        std::ofstream(root_ / "gateways.d" / "one.json")
            << R"({"name": "one", "proxy_token_sha256": ")" << kTokenSha256 << R"(",
                  "rate_limit": {"requests": 0},
                  "connectors": {"site": {"connector": "http", "domains": ["plain.test"], "preset": "read_only"}}})";
    }
    fs::path config() const { return root_ / "tameflared.json"; }
    std::string url(const std::string& path) const {
        return "http://plain.test:" + std::to_string(upstream_.port()) + path;
    }
    std::set<std::string> upstream_request_ids() const {
        std::set<std::string> ids;
        for (const auto& seen : upstream_.requests()) {
            for (const auto& [name, value] : seen.headers) {
                if (name == "X-TameFlare-Request-Id") ids.insert(value);
            }
        }
        return ids;
    }

    TempDir temp_{"tf-durability"};
    const fs::path root_ = temp_.path();
    TestUpstream upstream_;
};

TEST_F(Durability, EveryRequestThatReachedTheUpstreamHasItsRowAfterKill9UnderLoad) {
    write_config(root_ / "state");
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root_ / "daemon.log");
    ASSERT_TRUE(daemon.wait_for_log("tameflared started")) << daemon.log();
    const std::string listen = daemon.explicit_listen();
    ASSERT_FALSE(listen.empty()) << daemon.log();

    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> answered{0};
    std::vector<std::thread> clients;
    struct Join {
        std::atomic<bool>& stop;
        std::vector<std::thread>& threads;
        ~Join() {
            stop = true;
            for (auto& thread : threads) {
                if (thread.joinable()) thread.join();
            }
        }
    } join{stop, clients};
    for (int i = 0; i < 8; ++i) {
        clients.emplace_back([&, i] {
            ProxyClient client(listen);
            for (int n = 0; !stop; ++n) {
                const auto reply = client.get(url("/load/" + std::to_string(i) + "/" + std::to_string(n)));
                if (!reply) {
                    std::this_thread::sleep_for(5ms);
                    continue;
                }
                if (reply->status == 200) ++answered;
            }
        });
    }
    ASSERT_TRUE(upstream_.wait_for_requests(3000, 60s)) << daemon.log();
    daemon.process().signal(SIGKILL);
    EXPECT_EQ(daemon.process().wait(), 128 + SIGKILL);
    stop = true;
    for (auto& client : clients) client.join();

    const auto seen = upstream_request_ids();
    ASSERT_GE(seen.size(), 3000U);
    auto db = store::Database::open(root_ / "state" / "tameflared.db");
    std::set<std::string> rows;
    auto query = db.prepare("SELECT request_id FROM traffic WHERE decision = 'allowed'");
    while (query.step()) rows.insert(query.text(0));
    std::size_t missing = 0;
    for (const auto& id : seen) missing += rows.count(id) == 0 ? 1 : 0;
    EXPECT_EQ(missing, 0U) << "of " << seen.size() << " requests the upstream received";
    const auto incomplete = db.scalar("SELECT count(*) FROM traffic WHERE completed = 0");
    std::printf(
        "[   INFO   ] kill -9 after %zu forwarded requests (%llu answered): %zu rows, %lld written "
        "before the forward and never completed, none missing\n",
        seen.size(), static_cast<unsigned long long>(answered.load()), rows.size(), static_cast<long long>(incomplete));

    // The audit chain survived the crash, and a new daemon starts on the same state.
    const auto report = store::verify_audit(db, nullptr);
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_GE(report.records, seen.size());
    DaemonProcess again(TAMEFLARED_BINARY, config(), root_ / "daemon2.log");
    ASSERT_TRUE(again.wait_for_log("tameflared started")) << again.log();
    again.process().signal(SIGTERM);
    EXPECT_EQ(again.process().wait(), 0) << again.log();
}

TEST_F(Durability, AFullDiskMakesTheProxyRefuseInsteadOfForwardingUnlogged) {
    const fs::path state = root_ / "state";
    fs::create_directories(state);
    if (mount("tmpfs", state.c_str(), "tmpfs", 0, "size=4m") != 0) {
        GTEST_SKIP() << "cannot mount a 4 MiB tmpfs here (" << std::strerror(errno)
                     << "); needs root with CAP_SYS_ADMIN";
    }
    struct Unmount {
        fs::path path;
        ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
    } unmount{state};
    write_config(state);
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root_ / "daemon.log");
    ASSERT_TRUE(daemon.wait_for_log("tameflared started")) << daemon.log();
    ProxyClient client(daemon.explicit_listen());
    const auto first = client.get(url("/before"));
    ASSERT_TRUE(first);
    EXPECT_EQ(first->status, 200U);

    {
        std::ofstream filler(state / "filler", std::ios::binary);
        const std::string block(64 << 10, '\0');
        while (filler.write(block.data(), static_cast<std::streamsize>(block.size()))) {
        }
    }
    // Requests go on until the traffic log cannot grow; then each is refused
    // with 503 and never reaches the upstream.
    std::optional<Reply> refused;
    for (int i = 0; i < 20000 && !refused; ++i) {
        auto reply = client.get(url("/fill/" + std::to_string(i) + "?pad=" + std::string(200, 'p')));
        ASSERT_TRUE(reply) << daemon.log();
        if (reply->status == 503) refused = reply;
    }
    ASSERT_TRUE(refused) << "the traffic log never filled the disk";
    EXPECT_EQ(refused->error, "store_unavailable");
    EXPECT_EQ(upstream_request_ids().count(refused->request_id), 0U);
    const auto while_full = client.get(url("/while-full"));
    ASSERT_TRUE(while_full);
    EXPECT_EQ(while_full->status, 503U);
    EXPECT_EQ(upstream_request_ids().count(while_full->request_id), 0U);
    EXPECT_NE(daemon.log().find("store: cannot commit"), std::string::npos);

    fs::remove(state / "filler");
    std::optional<Reply> after;
    for (int i = 0; i < 100 && !(after && after->status == 200); ++i) {
        std::this_thread::sleep_for(100ms);
        after = client.get(url("/after"));
    }
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, 200U);
    daemon.process().signal(SIGTERM);
    EXPECT_EQ(daemon.process().wait(), 0) << daemon.log();

    // Every request the upstream saw has its row; the refused ones are
    // recorded as errors once there was room again.
    auto db = store::Database::open(state / "tameflared.db", store::Database::Mode::read_only);
    for (const auto& id : upstream_request_ids()) {
        auto row = db.prepare("SELECT count(*) FROM traffic WHERE request_id = ?");
        row.bind(1, id);
        ASSERT_TRUE(row.step());
        EXPECT_EQ(row.integer(0), 1) << id;
    }
    auto row = db.prepare("SELECT decision, forwarded FROM traffic WHERE request_id = ?");
    row.bind(1, while_full->request_id);
    ASSERT_TRUE(row.step());
    EXPECT_EQ(row.text(0), "error");
    EXPECT_EQ(row.integer(1), 0);
}

TEST_F(Durability, ATrippedKillSwitchIsStillTrippedAfterARestart) {
    const fs::path state = root_ / "state";
    write_config(state);
    fs::create_directories(state);
    {
        // Trip it the way the control plane does, on an in-process proxy.
        store::StoreOptions options;
        options.database = state / "tameflared.db";
        auto database = store::Store::open(options);
        policy::ConfigStore configs;
        proxy::ProxyOptions proxy_options;
        proxy_options.transparent_listen = proxy::Endpoint::parse("127.0.0.1:0");
        const auto ca = proxy::CertificateAuthority::load_or_create(root_ / "test-ca");
        dataplane::LocalDataPlane server(proxy_options, proxy::ProxyServices{&configs, ca.get()}, bpf::OriginSource{});
        control::KillSwitchControl control(*database, server);
        policy::KillSwitch kill;
        kill.gateways.insert("one");
        control.set(kill, "incident 42", "uid:0 test");
    }
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root_ / "daemon.log");
    ASSERT_TRUE(daemon.wait_for_log("tameflared started")) << daemon.log();
    EXPECT_NE(daemon.log().find("kill switch still active"), std::string::npos) << daemon.log();
    ProxyClient client(daemon.explicit_listen());
    const auto reply = client.get(url("/x"));
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->status, 403U);
    EXPECT_TRUE(upstream_.requests().empty());
    daemon.process().signal(SIGTERM);
    EXPECT_EQ(daemon.process().wait(), 0) << daemon.log();
    auto db = store::Database::open(state / "tameflared.db", store::Database::Mode::read_only);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM audit WHERE event = 'kill_switch.activated'"), 1);
}

TEST_F(Durability, ApprovalsPendingAtACrashAreExpiredWithAnAuditEvent) {
    const fs::path state = root_ / "state";
    write_config(state);
    fs::create_directories(state);
    {
        store::StoreOptions options;
        options.database = state / "tameflared.db";
        auto database = store::Store::open(options);
        database->approval_requested(store::ApprovalRow{"held-before-crash", "one", "agent-1", "github",
                                                        "github.pr.merge", "high", "{}", "needs a human",
                                                        store::Clock::now(), 300s});
        database->flush();
    }
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root_ / "daemon.log");
    ASSERT_TRUE(daemon.wait_for_log("tameflared started")) << daemon.log();
    EXPECT_NE(daemon.log().find("1 approvals pending before the restart expired"), std::string::npos) << daemon.log();
    daemon.process().signal(SIGTERM);
    EXPECT_EQ(daemon.process().wait(), 0) << daemon.log();
    auto db = store::Database::open(state / "tameflared.db", store::Database::Mode::read_only);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM approvals WHERE id = 'held-before-crash' AND state = 'expired'"), 1);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM audit WHERE event = 'approval.responded' AND subject = "
                        "'held-before-crash'"),
              1);
}

TEST_F(Durability, EveryApprovalIsRecordedWithItsOutcome) {
    store::StoreOptions options;
    options.database = root_ / "tameflared.db";
    auto database = store::Store::open(options);
    proxy::ApprovalQueue queue;
    daemon::RecordedApprovals approvals(queue, *database);
    const auto held = [](const std::string& id) {
        proxy::ApprovalRequest request;
        request.id = id;
        request.gateway = "one";
        request.agent = "agent-1";
        request.connector = "github";
        request.action = "github.pr.merge";
        request.risk = "high";
        request.parameters = R"({"number":"7"})";
        request.reason = "needs a human";
        request.requested_at = std::chrono::system_clock::now();
        request.timeout = 300s;
        return request;
    };
    std::vector<proxy::ApprovalAnswer> delivered;
    approvals.submit(held("a"), [&](proxy::ApprovalAnswer answer) { delivered.push_back(std::move(answer)); });
    approvals.submit(held("b"), [&](proxy::ApprovalAnswer answer) { delivered.push_back(std::move(answer)); });
    approvals.submit(held("c"), [&](proxy::ApprovalAnswer answer) { delivered.push_back(std::move(answer)); });
    EXPECT_TRUE(queue.answer("a", proxy::ApprovalAnswer{true, "looks fine", "uid:1000 pid:42"}));
    EXPECT_TRUE(queue.answer("b", proxy::ApprovalAnswer{false, "not today", "uid:1000 pid:42"}));
    approvals.withdraw("c");  // timed out
    approvals.withdraw("a");  // after the answer: changes nothing
    database->flush();
    ASSERT_EQ(delivered.size(), 2U);
    EXPECT_TRUE(delivered[0].approved);

    auto db = database->reader();
    const auto state = [&db](const std::string& id) {
        auto row = db.prepare("SELECT state FROM approvals WHERE id = ?");
        row.bind(1, id);
        return row.step() ? row.text(0) : std::string("(none)");
    };
    EXPECT_EQ(state("a"), "approved");
    EXPECT_EQ(state("b"), "denied");
    EXPECT_EQ(state("c"), "expired");
    EXPECT_EQ(db.scalar("SELECT count(*) FROM audit WHERE event = 'action.pending_approval'"), 3);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM audit WHERE event = 'approval.responded'"), 3);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM audit WHERE event = 'approval.responded' AND subject = 'a' "
                        "AND actor = 'uid:1000 pid:42' AND json_extract(details, '$.decision') = 'approved'"),
              1);
    const auto report = store::verify_audit(db, nullptr);
    EXPECT_TRUE(report.ok) << report.problem;
}

TEST_F(Durability, ASecondDaemonOnTheSameStateIsRefused) {
    write_config(root_ / "state");
    DaemonProcess first(TAMEFLARED_BINARY, config(), root_ / "first.log");
    ASSERT_TRUE(first.wait_for_log("tameflared started")) << first.log();
    DaemonProcess second(TAMEFLARED_BINARY, config(), root_ / "second.log");
    EXPECT_EQ(second.process().wait(), 1);
    EXPECT_NE(second.log().find("another tameflared"), std::string::npos) << second.log();
    first.process().signal(SIGTERM);
    EXPECT_EQ(first.process().wait(), 0);
}

}  // namespace
}  // namespace tameflare::testing
