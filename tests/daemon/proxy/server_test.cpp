// The proxy end to end on loopback: real clients (curl, raw sockets, Beast's
// WebSocket client, python urllib) through the transparent and explicit
// listeners to real upstreams (HTTP, and HTTPS with a test CA).
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "daemon/proxy/approvals.h"
#include "daemon/proxy/server.h"
#include "tests/support/files.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"
#include "tests/support/test_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace tameflare::proxy {
namespace {

using testing::Result;
using testing::SeenRequest;
using testing::Subprocess;
using testing::TempDir;
using testing::TestCa;
using testing::TestUpstream;
using namespace std::chrono_literals;

constexpr const char* kGithubAddress = "127.0.0.7";
constexpr const char* kPlainAddress = "127.0.0.8";
constexpr const char* kToken = "s3cret-token";

using testing::read_file;
using testing::sha256_hex;

class FixedOrigin : public OriginLookup {
public:
    std::optional<Origin> lookup(const AcceptedConnection& connection) override {
        std::lock_guard lock(mutex_);
        last_listener_ = connection.listener;
        return origin_;
    }
    std::uint64_t last_listener() {
        std::lock_guard lock(mutex_);
        return last_listener_;
    }
    void set(std::optional<Origin> origin) {
        std::lock_guard lock(mutex_);
        origin_ = std::move(origin);
    }

private:
    std::mutex mutex_;
    std::optional<Origin> origin_;
    std::uint64_t last_listener_ = 0;
};

class MapCredentials : public CredentialSource {
public:
    std::optional<std::string> credential(std::string_view name) override {
        std::lock_guard lock(mutex_);
        const auto it = values.find(std::string(name));
        if (it == values.end()) return std::nullopt;
        return it->second;
    }
    std::mutex mutex_;
    std::map<std::string, std::string> values;
};

class RecordingSink : public TrafficSink {
public:
    void record(TrafficRecord record) override {
        std::lock_guard lock(mutex_);
        records_.push_back(std::move(record));
        changed_.notify_all();
    }
    std::vector<TrafficRecord> wait_for(std::size_t n, std::chrono::milliseconds timeout = 10s) {
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, timeout, [&] { return records_.size() >= n; });
        return records_;
    }
    // Waits until some record satisfies `match`, and returns it (nullopt on timeout).
    template <typename Match>
    std::optional<TrafficRecord> wait_until(Match match, std::chrono::milliseconds timeout = 10s) {
        std::unique_lock lock(mutex_);
        std::optional<TrafficRecord> found;
        changed_.wait_for(lock, timeout, [&] {
            for (const auto& record : records_)
                if (match(record)) found = record;
            return found.has_value();
        });
        return found;
    }
    void clear() {
        std::lock_guard lock(mutex_);
        records_.clear();
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<TrafficRecord> records_;
};

// A response as curl -i prints it (the last one, after any 100 Continue).
struct Response {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
};

Response parse_response(const std::string& text) {
    Response out;
    std::size_t start = 0;
    for (;;) {
        const auto end = text.find("\r\n\r\n", start);
        if (end == std::string::npos || text.compare(start, 5, "HTTP/") != 0) break;
        out = Response{};
        std::istringstream head(text.substr(start, end - start));
        std::string line;
        std::getline(head, line);
        out.status = std::stoi(line.substr(line.find(' ') + 1, 3));
        while (std::getline(head, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            const auto colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string name = line.substr(0, colon);
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            const auto value = line.find_first_not_of(' ', colon + 1);
            out.headers[name] = value == std::string::npos ? "" : line.substr(value);
        }
        start = end + 4;
        out.body = text.substr(start);
    }
    return out;
}

std::vector<std::string> curl_argv(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env", "curl", "-q", "--silent", "--show-error", "--max-time", "20", "-i"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

// A plain TCP connection for raw requests.
class RawClient {
public:
    explicit RawClient(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
            throw std::runtime_error("connect");
    }
    ~RawClient() { ::close(fd_); }
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;

    void send(std::string_view bytes) const {
        ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    }
    void shutdown_write() const { ::shutdown(fd_, SHUT_WR); }
    // Reads until the peer closes or nothing arrives for `quiet`.
    std::string read_all(std::chrono::milliseconds quiet = 2000ms) const {
        std::string out;
        char buffer[8192];
        for (;;) {
            pollfd ready{fd_, POLLIN, 0};
            if (::poll(&ready, 1, static_cast<int>(quiet.count())) != 1) break;
            const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
            if (n <= 0) break;
            out.append(buffer, static_cast<std::size_t>(n));
        }
        return out;
    }
    // True when the peer has closed the connection (EOF or reset) within `timeout`.
    bool closed_within(std::chrono::milliseconds timeout) const {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        char buffer[4096];
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd ready{fd_, POLLIN, 0};
            if (::poll(&ready, 1, 50) != 1) continue;
            const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
            if (n <= 0) return true;
        }
        return false;
    }

private:
    int fd_ = -1;
};

std::string header(const SeenRequest& request, std::string name) {
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string found;
    for (const auto& [key, value] : request.headers) {
        std::string lower = key;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower == name) found = value;
    }
    return found;
}

class ProxyTest : public ::testing::Test {
protected:
    ProxyTest()
        : test_ca_(dir_.path()),
          github_({.address = kGithubAddress, .tls = test_ca_.issue({"api.github.com"}, {}, dir_.path(), "github")}),
          plain_({.address = kPlainAddress}) {
        credentials_.values["github-pat"] = "vault-github-secret";
        credentials_.values["plain-key"] = "vault-plain-secret";
        ca_ = CertificateAuthority::load_or_create(dir_.path() / "state");
        std::ofstream(dir_.path() / "proxy-ca.crt") << ca_->certificate_pem();
        configure();
        origins_.set(github_origin());
    }

    // The gateway "dev", with `extra` merged into it.
    void configure(const nlohmann::json& extra = nlohmann::json::object()) {
        nlohmann::json gateway = {{"name", "dev"},
                                  {"approval_timeout_seconds", 30},
                                  {"proxy_token_sha256", sha256_hex(kToken)},
                                  {"connectors",
                                   {{"github",
                                     {{"credential", "github-pat"},
                                      {"preset", "read_only"},
                                      {"rules",
                                       {{{"action", "github.pr.create"}, {"decision", "allow"}},
                                        {{"action", "github.pr.merge"}, {"decision", "require_approval"}}}}}},
                                    {"plain",
                                     {{"connector", "http"},
                                      {"domains", {"plain.test"}},
                                      {"credential", "plain-key"},
                                      {"preset", "allow_all"},
                                      {"rules", {{{"action", "http.delete"}, {"decision", "deny"}}}}}}}}};
        gateway.merge_patch(extra);
        const std::filesystem::path connectors = TF_SOURCE_DIR "/connectors";
        auto result = policy::load_config({{"github.json", read_file(connectors / "github.json")},
                                           {"http.json", read_file(connectors / "http.json")}},
                                          {{"dev.json", gateway.dump()}});
        ASSERT_TRUE(result.ok()) << policy::format_errors(result.errors);
        store_.publish(result.config);
    }

    void start(ProxyOptions options = {}) {
        options.transparent_listen = Endpoint{*IpAddress::parse("127.0.0.1"), 0};
        options.explicit_listen = Endpoint{*IpAddress::parse("127.0.0.1"), 0};
        options.threads = 2;
        options.system_resolver = false;
        options.hosts = hosts_;
        options.allowed_upstreams = {*Cidr::parse("127.0.0.0/8")};
        options.upstream_ca_file = test_ca_.ca_file().string();
        server_.emplace(options, ProxyServices{&store_, ca_.get(), &origins_, &credentials_, &approvals_, &sink_});
        server_->start();
    }
    void SetUp() override { start(); }

    Origin github_origin() const {
        return {Endpoint{*IpAddress::parse(kGithubAddress), github_.port()}, "dev", "agent-1"};
    }
    Origin plain_origin() const {
        return {Endpoint{*IpAddress::parse(kPlainAddress), plain_.port()}, "dev", "agent-1"};
    }
    std::uint16_t transparent_port() const { return server_->transparent_endpoint()->port; }
    std::uint16_t explicit_port() const { return server_->explicit_endpoint()->port; }

    // curl to https://api.github.com:<upstream port><path>, sent to the
    // transparent listener as the BPF redirect would.
    std::vector<std::string> github_curl(const std::string& path, std::vector<std::string> extra = {}) const {
        const std::string port = std::to_string(github_.port());
        std::vector<std::string> args{"--cacert", (dir_.path() / "proxy-ca.crt").string(), "--connect-to",
                                      "api.github.com:" + port + ":127.0.0.1:" + std::to_string(transparent_port())};
        args.insert(args.end(), extra.begin(), extra.end());
        args.push_back("https://api.github.com:" + port + path);
        return curl_argv(args);
    }
    // curl to http://plain.test:<upstream port><path> through the transparent listener.
    std::vector<std::string> plain_curl(const std::string& path, std::vector<std::string> extra = {}) const {
        const std::string port = std::to_string(plain_.port());
        std::vector<std::string> args{"--connect-to",
                                      "plain.test:" + port + ":127.0.0.1:" + std::to_string(transparent_port())};
        args.insert(args.end(), extra.begin(), extra.end());
        args.push_back("http://plain.test:" + port + path);
        return curl_argv(args);
    }
    Response github(const std::string& path, std::vector<std::string> extra = {}) const {
        const Result result = testing::run(github_curl(path, std::move(extra)));
        EXPECT_EQ(result.status, 0) << result.err;
        return parse_response(result.out);
    }
    std::string plain_request(const std::string& method, const std::string& path, const std::string& extra = "") const {
        return method + " " + path + " HTTP/1.1\r\nHost: plain.test:" + std::to_string(plain_.port()) + "\r\n" + extra +
               "\r\n";
    }

    std::map<std::string, std::vector<IpAddress>> hosts_{{"api.github.com", {*IpAddress::parse(kGithubAddress)}},
                                                         {"plain.test", {*IpAddress::parse(kPlainAddress)}}};
    TempDir dir_;
    TestCa test_ca_;
    TestUpstream github_;
    TestUpstream plain_;
    std::unique_ptr<CertificateAuthority> ca_;
    policy::ConfigStore store_;
    FixedOrigin origins_;
    MapCredentials credentials_;
    ApprovalQueue approvals_;
    RecordingSink sink_;
    std::optional<ProxyServer> server_;
};

TEST_F(ProxyTest, AllowedHttpsRequestGetsTheVaultCredentialAndTheDecisionHeaders) {
    const auto response = github("/repos/octo/hello/pulls", {"-H", "Authorization: token agent-own-token", "-H",
                                                             "X-TameFlare-Decision: forged", "-H", "Cookie: a=b"});
    ASSERT_EQ(response.status, 200) << response.body;
    EXPECT_EQ(response.headers.at("x-tameflare-decision"), "allowed");
    EXPECT_EQ(response.headers.at("x-tameflare-gateway"), "dev");
    EXPECT_EQ(response.headers.at("x-tameflare-connector"), "github");
    EXPECT_EQ(response.headers.at("x-tameflare-action"), "github.pr.list");
    EXPECT_EQ(response.headers.at("x-upstream"), "test");

    ASSERT_EQ(github_.requests().size(), 1u);
    const auto seen = github_.requests()[0];
    EXPECT_EQ(seen.target, "/repos/octo/hello/pulls");
    EXPECT_TRUE(seen.tls);
    EXPECT_EQ(seen.sni, "api.github.com");
    EXPECT_EQ(header(seen, "authorization"), "token vault-github-secret");
    EXPECT_EQ(header(seen, "x-tameflare-decision"), "");
    EXPECT_EQ(header(seen, "x-tameflare-request-id").size(), 32u);

    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "allowed");
    EXPECT_EQ(records[0].action, "github.pr.list");
    EXPECT_EQ(records[0].agent, "agent-1");
    EXPECT_EQ(records[0].host, "api.github.com");
    EXPECT_EQ(records[0].status, 200u);
    EXPECT_TRUE(records[0].forwarded);
    EXPECT_EQ(records[0].request_id, header(seen, "x-tameflare-request-id"));
}

TEST_F(ProxyTest, DeniedRequestGets403WithAJsonBodyAndNeverReachesTheUpstream) {
    const auto response = github("/repos/octo/hello", {"-X", "DELETE"});
    EXPECT_EQ(response.status, 403);
    EXPECT_EQ(response.headers.at("x-tameflare-decision"), "denied");
    EXPECT_EQ(response.headers.at("x-tameflare-action"), "github.repo.delete");
    const auto body = nlohmann::json::parse(response.body);
    EXPECT_EQ(body["decision"], "denied");
    EXPECT_EQ(body["gateway"], "dev");
    EXPECT_EQ(body["connector"], "github");
    EXPECT_EQ(body["action"], "github.repo.delete");
    EXPECT_FALSE(body["reason"].get<std::string>().empty());
    EXPECT_EQ(body["request_id"].get<std::string>().size(), 32u);
    EXPECT_TRUE(github_.requests().empty());
    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_FALSE(records[0].forwarded);
    EXPECT_EQ(records[0].status, 403u);
}

TEST_F(ProxyTest, HostThatDisagreesWithTheTlsServerNameIsDenied) {
    const auto response = github("/repos/octo/hello/pulls", {"-H", "Host: evil.example"});
    EXPECT_EQ(response.status, 403);
    EXPECT_NE(response.body.find("does not match the TLS server name"), std::string::npos) << response.body;
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, DestinationThatIsNotAnAddressOfTheNameIsDenied) {
    Origin fronted = github_origin();
    fronted.destination.address = *IpAddress::parse("127.0.0.9");  // not what the resolver says api.github.com is
    origins_.set(fronted);
    const auto response = github("/repos/octo/hello/pulls");
    EXPECT_EQ(response.status, 403);
    EXPECT_NE(response.body.find("not an address of"), std::string::npos) << response.body;
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, UnredirectedConnectionIsClosed) {
    origins_.set(std::nullopt);
    RawClient client(transparent_port());
    EXPECT_TRUE(client.closed_within(5s));
    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "denied");
}

// An agent's own listener (made inside its network namespace, in the
// daemon): the proxy serves it, tells the OriginLookup which one accepted,
// and stops accepting on it when it is removed.
TEST_F(ProxyTest, AnAddedListenerIsServedWithItsTagUntilRemoved) {
    origins_.set(plain_origin());
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(listener.get(), 16), 0);
    ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
    const std::string port = std::to_string(ntohs(address.sin_port));
    server_->add_listener(std::move(listener), 42);

    const std::string upstream = std::to_string(plain_.port());
    const auto curl = curl_argv(
        {"--connect-to", "plain.test:" + upstream + ":127.0.0.1:" + port, "http://plain.test:" + upstream + "/hello"});
    const Result result = testing::run(curl);
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(parse_response(result.out).status, 200);
    EXPECT_EQ(origins_.last_listener(), 42U);

    server_->remove_listener(42);
    bool refused = false;
    for (int i = 0; i < 100 && !refused; ++i) {
        const UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        refused = ::connect(probe.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0;
        if (!refused) std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(refused) << "the removed listener still accepts";
}

TEST_F(ProxyTest, UpstreamCertificateFailureIs502NeverADowngrade) {
    TestUpstream untrusted(
        {.address = "127.0.0.10", .tls = TestCa::self_signed({"api.github.com"}, {}, dir_.path(), "untrusted")});
    server_.reset();
    hosts_["api.github.com"] = {*IpAddress::parse("127.0.0.10")};  // now the untrusted server
    start();
    origins_.set(Origin{Endpoint{*IpAddress::parse("127.0.0.10"), untrusted.port()}, "dev", "agent-1"});
    const std::string port = std::to_string(untrusted.port());
    const Result result =
        testing::run(curl_argv({"--cacert", (dir_.path() / "proxy-ca.crt").string(), "--connect-to",
                                "api.github.com:" + port + ":127.0.0.1:" + std::to_string(transparent_port()),
                                "https://api.github.com:" + port + "/repos/octo/hello/pulls"}));
    const auto response = parse_response(result.out);
    EXPECT_EQ(response.status, 502);
    const auto body = nlohmann::json::parse(response.body);
    EXPECT_EQ(body["error"], "upstream_tls");
    EXPECT_NE(body["message"].get<std::string>().find("failed verification"), std::string::npos) << response.body;
    EXPECT_TRUE(untrusted.requests().empty());
    const auto records = sink_.wait_for(1);
    ASSERT_FALSE(records.empty());
    EXPECT_EQ(records.back().decision, "error");
    EXPECT_EQ(records.back().status, 502u);
}

TEST_F(ProxyTest, ApprovedRequestIsForwarded) {
    approvals_.on_submit([this](const ApprovalRequest& request) {
        EXPECT_EQ(request.action, "github.pr.merge");
        EXPECT_EQ(request.agent, "agent-1");
        EXPECT_NE(request.parameters.find("\"number\""), std::string::npos);
        std::thread([this, id = request.id] { approvals_.answer(id, {true, "looks good"}); }).detach();
    });
    const auto response = github("/repos/octo/hello/pulls/7/merge", {"-X", "PUT", "-d", "{}"});
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.headers.at("x-tameflare-decision"), "approved");
    ASSERT_EQ(github_.requests().size(), 1u);
    EXPECT_EQ(github_.requests()[0].method, "PUT");
}

TEST_F(ProxyTest, DeniedApprovalIs403) {
    approvals_.on_submit([this](const ApprovalRequest& request) {
        std::thread([this, id = request.id] { approvals_.answer(id, {false, "not today"}); }).detach();
    });
    const auto response = github("/repos/octo/hello/pulls/7/merge", {"-X", "PUT", "-d", "{}"});
    EXPECT_EQ(response.status, 403);
    EXPECT_NE(response.body.find("not today"), std::string::npos);
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, UnansweredApprovalTimesOutWith408) {
    configure({{"approval_timeout_seconds", 1}});
    const auto response = github("/repos/octo/hello/pulls/7/merge", {"-X", "PUT", "-d", "{}"});
    EXPECT_EQ(response.status, 408);
    EXPECT_EQ(response.headers.at("x-tameflare-decision"), "approval_timeout");
    EXPECT_EQ(approvals_.size(), 0u);  // withdrawn
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, KillSwitchSeversAnOpenStreamAndDeniesNewRequests) {
    origins_.set(plain_origin());
    Subprocess stream(plain_curl("/sse?n=50&interval_ms=100", {"-N"}));
    ASSERT_TRUE(plain_.wait_for_requests(1));
    std::this_thread::sleep_for(300ms);
    policy::KillSwitch kill;
    kill.connectors.insert("http");  // by connector definition: covers the "plain" instance
    server_->set_kill_switch(kill);
    const auto started = std::chrono::steady_clock::now();
    EXPECT_NE(stream.wait(), 0);                                // curl saw the stream cut short
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);  // cut, not run to its 5 s end
    EXPECT_NE(stream.out().find("data: 0"), std::string::npos);
    EXPECT_EQ(stream.out().find("data: 49"), std::string::npos);

    auto response = parse_response(testing::run(plain_curl("/after")).out);
    EXPECT_EQ(response.status, 403);
    EXPECT_EQ(response.headers["x-tameflare-kill-switch"], "active");
    EXPECT_EQ(plain_.requests().size(), 1u);
    // Other connectors are not in scope.
    origins_.set(github_origin());
    EXPECT_EQ(github("/repos/octo/hello/pulls").status, 200);
}

TEST_F(ProxyTest, KillSwitchDeniesHeldRequests) {
    approvals_.on_submit([this](const ApprovalRequest&) {
        std::thread([this] {
            policy::KillSwitch kill;
            kill.gateways.insert("dev");
            server_->set_kill_switch(kill);
        }).detach();
    });
    const auto response = github("/repos/octo/hello/pulls/7/merge", {"-X", "PUT", "-d", "{}"});
    EXPECT_EQ(response.status, 403);
    EXPECT_EQ(response.headers.at("x-tameflare-kill-switch"), "active");
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, RateLimitAnswers429WithRetryAfter) {
    configure({{"rate_limit", {{"requests", 2}, {"window_seconds", 60}}}});
    EXPECT_EQ(github("/repos/octo/hello/pulls").status, 200);
    EXPECT_EQ(github("/repos/octo/hello/pulls").status, 200);
    const auto limited = github("/repos/octo/hello/pulls");
    EXPECT_EQ(limited.status, 429);
    EXPECT_EQ(limited.headers.at("x-tameflare-decision"), "rate_limited");
    EXPECT_GE(std::stoi(limited.headers.at("retry-after")), 1);
    EXPECT_EQ(github_.requests().size(), 2u);
}

TEST_F(ProxyTest, PipelinedRequestsAreDecidedOneByOne) {
    origins_.set(plain_origin());
    RawClient client(transparent_port());
    client.send(plain_request("GET", "/one") + plain_request("DELETE", "/two") + plain_request("GET", "/three"));
    const std::string replies = client.read_all(1500ms);
    const auto first = replies.find("HTTP/1.1 200");
    const auto second = replies.find("HTTP/1.1 403", first);
    const auto third = replies.find("HTTP/1.1 200", second);
    EXPECT_NE(first, std::string::npos) << replies;
    EXPECT_NE(second, std::string::npos) << replies;
    EXPECT_NE(third, std::string::npos) << replies;
    ASSERT_EQ(plain_.requests().size(), 2u);
    EXPECT_EQ(plain_.requests()[0].target, "/one");
    EXPECT_EQ(plain_.requests()[1].target, "/three");
    EXPECT_EQ(header(plain_.requests()[0], "authorization"), "Bearer vault-plain-secret");
}

TEST_F(ProxyTest, SmugglingShapesAreRefusedWith400AndClosed) {
    origins_.set(plain_origin());
    const std::string host = "Host: plain.test:" + std::to_string(plain_.port()) + "\r\n";
    const std::string shapes[] = {
        "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\n" + host + "Content-Length: +3\r\n\r\nabc",
        "GET / HTTP/1.1\r\n" + host + "X-A: b\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\n" + host + "X-Big: " + std::string(20000, 'a') + "\r\n\r\n",
        "GET / HTTP/1.1\nHost: plain.test\n\n",
    };
    for (const auto& shape : shapes) {
        RawClient client(transparent_port());
        client.send(shape);
        const std::string reply = client.read_all();
        EXPECT_TRUE(reply.starts_with("HTTP/1.1 400")) << shape.substr(0, 80) << " -> " << reply;
        EXPECT_TRUE(client.closed_within(1s));
    }
    EXPECT_TRUE(plain_.requests().empty());
}

TEST_F(ProxyTest, ServerSentEventsStreamThrough) {
    origins_.set(plain_origin());
    Subprocess stream(plain_curl("/sse?n=3&interval_ms=700", {"-N"}));
    const auto started = std::chrono::steady_clock::now();
    // The first event must arrive long before the last one is written (1.4 s).
    bool first_early = false;
    while (std::chrono::steady_clock::now() - started < 3s) {
        stream.wait_for_stderr("never", 0, 50ms);
        if (stream.out().find("data: 0") != std::string::npos) {
            first_early = std::chrono::steady_clock::now() - started < 1200ms;
            break;
        }
    }
    EXPECT_EQ(stream.wait(), 0);
    EXPECT_TRUE(first_early) << stream.out();
    EXPECT_NE(stream.out().find("data: 2"), std::string::npos);
}

// Connection is hop-by-hop: an upstream that closes after its response does
// not close the agent's keep-alive connection, and the next request on it
// gets a new upstream connection.
TEST_F(ProxyTest, AnUpstreamThatClosesLeavesTheClientsConnectionOpen) {
    origins_.set(plain_origin());
    RawClient client(transparent_port());
    client.send(plain_request("GET", "/close") + plain_request("GET", "/one"));
    const std::string replies = client.read_all(1500ms);
    const auto first = replies.find("HTTP/1.1 200");
    ASSERT_NE(first, std::string::npos) << replies;
    EXPECT_NE(replies.find("HTTP/1.1 200", first + 1), std::string::npos) << replies;
    EXPECT_EQ(replies.find("Connection: close"), std::string::npos) << replies;
    ASSERT_EQ(plain_.requests().size(), 2u);
    EXPECT_EQ(plain_.requests()[1].target, "/one");
}

// Bodies of several MiB each way arrive whole (relayed in 64 KiB pieces).
TEST_F(ProxyTest, LargeBodiesArriveWholeBothWays) {
    origins_.set(plain_origin());
    const std::string connect_to =
        "plain.test:" + std::to_string(plain_.port()) + ":127.0.0.1:" + std::to_string(transparent_port());
    const std::string base = "http://plain.test:" + std::to_string(plain_.port());
    const Result download = testing::run(curl_argv({"--connect-to", connect_to, "-o", "/dev/null", "-w",
                                                    "%{size_download}", base + "/bytes?n=" + std::to_string(5 << 20)}));
    ASSERT_EQ(download.status, 0) << download.err;
    EXPECT_EQ(download.out, std::to_string(5 << 20));
    const TempDir dir;
    const auto upload = dir.path() / "upload";
    std::ofstream(upload) << std::string(3 << 20, 'u');
    const Result posted =
        testing::run(curl_argv({"--connect-to", connect_to, "--data-binary", "@" + upload.string(), base + "/upload"}));
    ASSERT_EQ(posted.status, 0) << posted.err;
    ASSERT_EQ(plain_.requests().size(), 2u) << posted.out << posted.err;
    EXPECT_EQ(plain_.requests()[1].body.size(), std::size_t{3} << 20);
}

TEST_F(ProxyTest, ChunkedRequestAndResponseBodiesPassThrough) {
    origins_.set(plain_origin());
    const Result result = testing::run(
        curl_argv({"--connect-to",
                   "plain.test:" + std::to_string(plain_.port()) + ":127.0.0.1:" + std::to_string(transparent_port()),
                   "-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunked world",
                   "http://plain.test:" + std::to_string(plain_.port()) + "/upload"}));
    ASSERT_EQ(result.status, 0) << result.err;
    ASSERT_EQ(plain_.requests().size(), 1u);
    EXPECT_EQ(plain_.requests()[0].body, "hello chunked world");
    const Result chunked = testing::run(
        curl_argv({"--connect-to",
                   "plain.test:" + std::to_string(plain_.port()) + ":127.0.0.1:" + std::to_string(transparent_port()),
                   "http://plain.test:" + std::to_string(plain_.port()) + "/chunked?n=3"}));
    EXPECT_NE(chunked.out.find("chunk 2"), std::string::npos) << chunked.out;
}

TEST_F(ProxyTest, ExpectContinueWorks) {
    const auto response =
        github("/repos/octo/hello/pulls", {"-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
                                           "--data-binary", R"({"title":"t","head":"a","base":"main"})"});
    EXPECT_EQ(response.status, 200);
    ASSERT_EQ(github_.requests().size(), 1u);
    EXPECT_EQ(github_.requests()[0].body, R"({"title":"t","head":"a","base":"main"})");
    EXPECT_EQ(header(github_.requests()[0], "expect"), "");  // the proxy answered it itself
}

TEST_F(ProxyTest, WebSocketIsDecidedThenTunnelled) {
    origins_.set(plain_origin());
    boost::asio::io_context io;
    boost::beast::websocket::stream<boost::asio::ip::tcp::socket> socket(io);
    socket.next_layer().connect({boost::asio::ip::make_address("127.0.0.1"), transparent_port()});
    boost::beast::websocket::response_type upgrade;
    socket.handshake(upgrade, "plain.test:" + std::to_string(plain_.port()), "/ws");
    EXPECT_EQ(upgrade["X-TameFlare-Decision"], "allowed");
    socket.text(true);
    socket.write(boost::asio::buffer(std::string("ping")));
    boost::beast::flat_buffer buffer;
    socket.read(buffer);
    EXPECT_EQ(boost::beast::buffers_to_string(buffer.data()), "ping");
    socket.close(boost::beast::websocket::close_code::normal);
}

// A one-connection echo server on 127.0.0.11 for raw TCP: it answers
// "echo:" + what it read, then closes after the client's half-close.
class EchoServer {
public:
    EchoServer() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.11"), 0}) {
        thread_ = std::thread([this] {
            boost::system::error_code error;
            boost::asio::ip::tcp::socket socket(io_);
            acceptor_.accept(socket, error);
            if (error) return;
            ++accepted_;
            std::string data;
            char buffer[1024];
            for (;;) {
                const auto n = socket.read_some(boost::asio::buffer(buffer), error);
                if (error) break;
                data.append(buffer, n);
            }
            boost::asio::write(socket, boost::asio::buffer("echo:" + data), error);
        });
    }
    ~EchoServer() {
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        thread_.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    int accepted() const { return accepted_; }

private:
    boost::asio::io_context io_;
    boost::asio::ip::tcp::acceptor acceptor_;
    std::atomic<int> accepted_{0};
    std::thread thread_;
};

TEST_F(ProxyTest, RawTcpIsDeniedWithoutARuleAndTunnelledWithOne) {
    EchoServer echo;
    origins_.set(Origin{Endpoint{*IpAddress::parse("127.0.0.11"), echo.port()}, "dev", "agent-1"});
    const std::string garbage("\x01\x02 not http\r\n\r\n", 16);
    {
        RawClient client(transparent_port());
        client.send(garbage);
        EXPECT_TRUE(client.closed_within(3s));
    }
    auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "denied");
    EXPECT_NE(records[0].reason.find("raw TCP"), std::string::npos) << records[0].reason;
    EXPECT_EQ(echo.accepted(), 0);

    configure({{"tcp", {{{"cidr", "127.0.0.11/32"}, {"port", echo.port()}}}}});
    sink_.clear();
    RawClient client(transparent_port());
    client.send(garbage);
    client.shutdown_write();
    EXPECT_EQ(client.read_all(), "echo:" + garbage);
    records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "allowed");
    EXPECT_EQ(records[0].action, "tcp.connect");
    EXPECT_EQ(records[0].request_bytes, garbage.size());
    EXPECT_EQ(records[0].response_bytes, garbage.size() + 5);
}

// An SSH client (a git remote over SSH) is refused with a reason that says
// why and what to use instead.
TEST_F(ProxyTest, SshIsRefusedWithAReasonThatNamesHttpsRemotes) {
    origins_.set(Origin{Endpoint{*IpAddress::parse("127.0.0.11"), 22}, "dev", "agent-1"});
    RawClient client(transparent_port());
    client.send("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    EXPECT_TRUE(client.closed_within(3s));
    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "denied");
    EXPECT_NE(records[0].reason.find("SSH to 127.0.0.11:22 is not allowed by gateway \"dev\""), std::string::npos)
        << records[0].reason;
    EXPECT_NE(records[0].reason.find("use an HTTPS remote"), std::string::npos) << records[0].reason;
}

// Clients that do not trust the interception CA abort the handshake with an
// alert: each is recorded with the alert and the server name.
TEST_F(ProxyTest, AHandshakeTheClientAbortsIsRecordedWithItsAlertAndName) {
    const std::string port = std::to_string(github_.port());
    const std::string connect_to = "api.github.com:" + port + ":127.0.0.1:" + std::to_string(transparent_port());
    ::testing::internal::CaptureStderr();  // the daemon's log (not under systemd: stderr)
    // curl with only the test upstream's CA: the proxy's leaf is from an unknown CA.
    const Result curl = testing::run(curl_argv({"--cacert", test_ca_.ca_file().string(), "--connect-to", connect_to,
                                                "https://api.github.com:" + port + "/repos/octo/hello/pulls"}));
    EXPECT_EQ(curl.status, 60) << curl.err;  // CURLE_PEER_FAILED_VERIFICATION
    // Python's ssl module, the same trust.
    const Result python = testing::run({"/usr/bin/env", "python3", "-c",
                                        "import socket, ssl, sys\n"
                                        "context = ssl.create_default_context(cafile=sys.argv[1])\n"
                                        "with socket.create_connection(('127.0.0.1', int(sys.argv[2]))) as raw:\n"
                                        "    try:\n"
                                        "        context.wrap_socket(raw, server_hostname='api.github.com')\n"
                                        "    except ssl.SSLCertVerificationError as error:\n"
                                        "        print(error.verify_message)\n",
                                        test_ca_.ca_file().string(), std::to_string(transparent_port())});
    EXPECT_EQ(python.out, "unable to get local issuer certificate\n") << python.err;
    const auto records = sink_.wait_for(2);
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_EQ(records.size(), 2u);
    // Logged once for the agent and the name, however often it happens.
    const auto first = log.find("the client refused the interception certificate for \"api.github.com\"");
    EXPECT_NE(first, std::string::npos) << log;
    EXPECT_EQ(log.find("the client refused", first + 1), std::string::npos) << log;
    EXPECT_NE(log.find("TLS_ALERT=\"unknown CA\""), std::string::npos) << log;
    for (const auto& record : records) {
        EXPECT_EQ(record.action, "tls.certificate_refused");
        EXPECT_EQ(record.connector, "tls");
        EXPECT_EQ(record.decision, "error");
        EXPECT_EQ(record.host, "api.github.com");
        EXPECT_EQ(record.agent, "agent-1");
        EXPECT_NE(record.reason.find("TLS alert \"unknown CA\""), std::string::npos) << record.reason;
        EXPECT_FALSE(record.forwarded);
    }
    EXPECT_TRUE(github_.requests().empty());

    // A client that hangs up once it has the certificate, without an alert (Java's HttpClient does).
    sink_.clear();
    const Result hung_up =
        testing::run({"/usr/bin/env", "python3", "-c",
                      "import socket, ssl, sys\n"
                      "context = ssl.create_default_context(cafile=sys.argv[1])\n"
                      "incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()\n"
                      "tls = context.wrap_bio(incoming, outgoing, server_hostname='api.github.com')\n"
                      "raw = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n"
                      "try:\n"
                      "    tls.do_handshake()\n"
                      "except ssl.SSLWantReadError:\n"
                      "    raw.sendall(outgoing.read())\n"
                      "print(len(raw.recv(65536)) > 0)\n"
                      "raw.close()\n",
                      test_ca_.ca_file().string(), std::to_string(transparent_port())});
    EXPECT_EQ(hung_up.out, "True\n") << hung_up.err;
    const auto silent = sink_.wait_for(1);
    ASSERT_EQ(silent.size(), 1u);
    EXPECT_EQ(silent[0].action, "tls.certificate_refused");
    EXPECT_NE(silent[0].reason.find("it hung up on receiving it, without an alert"), std::string::npos)
        << silent[0].reason;

    // A client that just hangs up is no refusal of the certificate: nothing is recorded for it.
    sink_.clear();
    {
        RawClient client(transparent_port());
        const std::string hello_start("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10);
        client.send(hello_start);
    }
    std::this_thread::sleep_for(300ms);
    for (const auto& record : sink_.wait_for(0, 0ms)) EXPECT_NE(record.action, "tls.certificate_refused");
}

// TLS for a name no connector of "dev" serves (tls.test, an HTTPS upstream on
// 127.0.0.13 with a certificate of the test CA). Clients that trust only the
// test CA, not the proxy's, can talk to it only if nothing intercepts.
constexpr const char* kUnservedAddress = "127.0.0.13";

class TlsPassthroughTest : public ProxyTest {
protected:
    TlsPassthroughTest()
        : unserved_({.address = kUnservedAddress, .tls = test_ca_.issue({"tls.test"}, {}, dir_.path(), "unserved")}) {
        hosts_["tls.test"] = {*IpAddress::parse(kUnservedAddress)};
    }

    static nlohmann::json host_rule(std::uint16_t port) { return {{"tcp", {{{"host", "tls.test"}, {"port", port}}}}}; }
    std::string proxy_url() const {
        return "http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    }
    std::string url(std::uint16_t port, const std::string& path = "/hello") const {
        return "https://tls.test:" + std::to_string(port) + path;
    }
    // curl to https://tls.test:<port> through the explicit proxy, trusting `ca_file` only.
    Result explicit_curl(const std::filesystem::path& ca_file, std::uint16_t port) const {
        return testing::run(curl_argv({"--cacert", ca_file.string(), "-x", proxy_url(), url(port)}));
    }
    // The same, sent to the transparent listener as the BPF redirect would.
    Result transparent_curl(const std::filesystem::path& ca_file, std::uint16_t port) const {
        const std::string name = "tls.test:" + std::to_string(port);
        return testing::run(curl_argv({"--cacert", ca_file.string(), "--connect-to",
                                       name + ":127.0.0.1:" + std::to_string(transparent_port()), url(port)}));
    }
    std::filesystem::path proxy_ca() const { return dir_.path() / "proxy-ca.crt"; }

    TestUpstream unserved_;
};

TEST_F(TlsPassthroughTest, ExplicitConnectToAnUnservedNameWithATcpRuleIsPassedThroughUntouched) {
    configure(host_rule(unserved_.port()));
    const Result result = explicit_curl(test_ca_.ca_file(), unserved_.port());
    ASSERT_EQ(result.status, 0) << result.err;
    const auto response = parse_response(result.out);
    EXPECT_EQ(response.status, 200) << result.out;
    EXPECT_EQ(response.headers.at("x-upstream"), "test");
    EXPECT_EQ(response.headers.count("x-tameflare-decision"), 0u);  // not a response the proxy relayed
    ASSERT_EQ(unserved_.requests().size(), 1u);
    const auto seen = unserved_.requests()[0];
    EXPECT_TRUE(seen.tls);
    EXPECT_EQ(seen.sni, "tls.test");
    EXPECT_EQ(seen.target, "/hello");
    EXPECT_EQ(header(seen, "x-tameflare-request-id"), "");
    EXPECT_EQ(header(seen, "proxy-authorization"), "");

    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].connector, "tcp");
    EXPECT_EQ(records[0].action, "tcp.tls_passthrough");
    EXPECT_EQ(records[0].decision, "allowed");
    EXPECT_EQ(records[0].host, "tls.test");
    EXPECT_EQ(records[0].path, std::to_string(unserved_.port()));
    EXPECT_EQ(records[0].agent, "explicit");
    EXPECT_TRUE(records[0].forwarded);
    EXPECT_GT(records[0].request_bytes, 0u);
    EXPECT_GT(records[0].response_bytes, 0u);
    EXPECT_NE(records[0].reason.find("tcp rule 0"), std::string::npos) << records[0].reason;

    // The agent sees the upstream's own certificate: the proxy's CA does not verify it.
    const Result with_proxy_ca = explicit_curl(proxy_ca(), unserved_.port());
    EXPECT_EQ(with_proxy_ca.status, 60) << with_proxy_ca.err;  // CURLE_PEER_FAILED_VERIFICATION
}

TEST_F(TlsPassthroughTest, ANameAConnectorServesIsInterceptedWhateverTheTcpRules) {
    auto extra = host_rule(unserved_.port());
    extra["connectors"] = {{"plain", {{"domains", {"plain.test", "tls.test"}}}}};
    configure(extra);
    const Result untrusting = explicit_curl(test_ca_.ca_file(), unserved_.port());
    EXPECT_EQ(untrusting.status, 60) << untrusting.err;  // the proxy's leaf, not the upstream's certificate
    EXPECT_EQ(unserved_.connections_accepted(), 0u);

    const Result result = explicit_curl(proxy_ca(), unserved_.port());
    ASSERT_EQ(result.status, 0) << result.err;
    const auto response = parse_response(result.out);
    EXPECT_EQ(response.status, 200) << result.out;
    EXPECT_EQ(response.headers.at("x-tameflare-connector"), "plain");
    EXPECT_EQ(response.headers.at("x-tameflare-action"), "http.get");
    ASSERT_EQ(unserved_.requests().size(), 1u);
    EXPECT_EQ(header(unserved_.requests()[0], "authorization"), "Bearer vault-plain-secret");
    bool decided = false;
    for (int i = 0; i < 100 && !decided; ++i) {
        for (const auto& record : sink_.wait_for(1)) decided |= record.action == "http.get" && record.forwarded;
        if (!decided) std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(decided);
    for (const auto& record : sink_.wait_for(1)) EXPECT_NE(record.action, "tcp.tls_passthrough");
}

TEST_F(TlsPassthroughTest, WithoutATcpRuleAnUnservedNameIsInterceptedAndDenied) {
    const Result untrusting = explicit_curl(test_ca_.ca_file(), unserved_.port());
    EXPECT_EQ(untrusting.status, 60) << untrusting.err;

    const Result result = explicit_curl(proxy_ca(), unserved_.port());
    ASSERT_EQ(result.status, 0) << result.err;
    const auto response = parse_response(result.out);
    EXPECT_EQ(response.status, 403) << result.out;
    EXPECT_NE(response.body.find("no connector"), std::string::npos) << response.body;
    EXPECT_EQ(unserved_.connections_accepted(), 0u);
    // The untrusting client's refusal is recorded too (tls.certificate_refused), in either order.
    const auto refused = sink_.wait_until([](const TrafficRecord& r) { return r.action == "tls.certificate_refused"; });
    EXPECT_TRUE(refused.has_value());
    const auto denied = sink_.wait_until([](const TrafficRecord& r) { return r.decision == "denied"; });
    ASSERT_TRUE(denied.has_value());
    EXPECT_EQ(denied->host, "tls.test");
    EXPECT_FALSE(denied->forwarded);
    EXPECT_EQ(sink_.wait_for(2).size(), 2u);
}

TEST_F(TlsPassthroughTest, TransparentTlsToAnUnservedNameIsPassedThroughByAHostOrCidrRule) {
    origins_.set(Origin{Endpoint{*IpAddress::parse(kUnservedAddress), unserved_.port()}, "dev", "agent-1"});
    const nlohmann::json rules[] = {
        host_rule(unserved_.port()),
        {{"tcp", {{{"cidr", std::string(kUnservedAddress) + "/32"}, {"port", unserved_.port()}}}}},
    };
    for (const auto& rule : rules) {
        SCOPED_TRACE(rule.dump());
        configure(rule);
        sink_.clear();
        unserved_.clear();
        const Result result = transparent_curl(test_ca_.ca_file(), unserved_.port());
        ASSERT_EQ(result.status, 0) << result.err;
        EXPECT_EQ(parse_response(result.out).status, 200) << result.out;
        ASSERT_EQ(unserved_.requests().size(), 1u);
        EXPECT_EQ(unserved_.requests()[0].sni, "tls.test");
        const auto records = sink_.wait_for(1);
        ASSERT_EQ(records.size(), 1u);
        EXPECT_EQ(records[0].action, "tcp.tls_passthrough");
        EXPECT_EQ(records[0].host, "tls.test");
        EXPECT_EQ(records[0].agent, "agent-1");
        EXPECT_TRUE(records[0].forwarded);
    }

    // The kill switch for raw TCP covers passed-through TLS too.
    policy::KillSwitch kill;
    kill.connectors.insert("tcp");
    server_->set_kill_switch(kill);
    sink_.clear();
    unserved_.clear();
    const Result killed = transparent_curl(test_ca_.ca_file(), unserved_.port());
    EXPECT_NE(killed.status, 0);
    EXPECT_EQ(unserved_.connections_accepted(), 0u);
    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "denied");
    EXPECT_EQ(records[0].reason, "kill switch active");
}

// The server name is the agent's to choose. Sent to an address that no tcp
// rule allows (another host's, or a host a connector serves), a name that a
// rule does allow passes nothing through.
TEST_F(TlsPassthroughTest, AnAllowedServerNameOnAConnectionToAnotherAddressIsNotPassedThrough) {
    TestUpstream other({.address = "127.0.0.14", .tls = test_ca_.issue({"tls.test"}, {}, dir_.path(), "other")});
    TestUpstream* victims[] = {&other, &github_};
    for (TestUpstream* victim : victims) {
        SCOPED_TRACE(victim->address());
        configure(host_rule(victim->port()));  // tls.test resolves to 127.0.0.13, not the victim
        origins_.set(Origin{Endpoint{*IpAddress::parse(victim->address()), victim->port()}, "dev", "agent-1"});
        const Result untrusting = transparent_curl(test_ca_.ca_file(), victim->port());
        EXPECT_EQ(untrusting.status, 60) << untrusting.err;  // intercepted: the proxy's leaf
        const Result result = transparent_curl(proxy_ca(), victim->port());
        const auto response = parse_response(result.out);
        EXPECT_EQ(response.status, 403) << result.out << result.err;
        EXPECT_NE(response.body.find("no connector"), std::string::npos) << response.body;
        EXPECT_EQ(victim->connections_accepted(), 0u);
    }
    for (const auto& record : sink_.wait_for(1)) EXPECT_NE(record.action, "tcp.tls_passthrough");

    // Explicit: the server name must be the CONNECT target, which the daemon
    // resolves itself; naming tls.test in the ClientHello of a tunnel to
    // api.github.com closes the connection.
    configure(host_rule(github_.port()));
    sink_.clear();
    const std::string script = R"(
import base64, socket, ssl, sys
port, target, sni, cafile, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection(('127.0.0.1', port))
auth = base64.b64encode(('dev:' + token).encode()).decode()
s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n' % (target, target, auth)).encode())
reply = b''
while b'\r\n\r\n' not in reply:
    chunk = s.recv(1024)
    if not chunk:
        break
    reply += chunk
print(reply.split(b'\r\n')[0].decode())
try:
    with ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname=sni) as t:
        t.sendall(b'GET / HTTP/1.1\r\nHost: ' + sni.encode() + b'\r\nConnection: close\r\n\r\n')
        print(t.recv(100))
except (ssl.SSLError, OSError) as error:
    print('refused', type(error).__name__)
)";
    const Result fronted = testing::run({"/usr/bin/env", "python3", "-c", script, std::to_string(explicit_port()),
                                         "api.github.com:" + std::to_string(github_.port()), "tls.test",
                                         test_ca_.ca_file().string(), kToken});
    EXPECT_EQ(fronted.status, 0) << fronted.err;
    EXPECT_TRUE(fronted.out.starts_with("HTTP/1.1 200")) << fronted.out;
    EXPECT_NE(fronted.out.find("refused"), std::string::npos) << fronted.out;
    EXPECT_EQ(github_.connections_accepted(), 0u);
    // The 403s above may still be on their way to the sink: look for this refusal.
    bool refused = false;
    for (int i = 0; i < 100 && !refused; ++i) {
        for (const auto& record : sink_.wait_for(1)) {
            refused |= record.decision == "denied" && record.host == "tls.test" &&
                       record.reason.find("does not match the CONNECT target") != std::string::npos;
        }
        if (!refused) std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(refused);
}

TEST_F(ProxyTest, ExplicitProxyConnectIsInterceptedAndDecided) {
    const std::string port = std::to_string(github_.port());
    const std::string proxy = "http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    Result result = testing::run(curl_argv({"--cacert", (dir_.path() / "proxy-ca.crt").string(), "-x", proxy,
                                            "https://api.github.com:" + port + "/repos/octo/hello/pulls"}));
    auto response = parse_response(result.out);
    EXPECT_EQ(response.status, 200) << result.out << result.err;
    ASSERT_EQ(github_.requests().size(), 1u);
    EXPECT_EQ(header(github_.requests()[0], "proxy-authorization"), "");
    EXPECT_EQ(header(github_.requests()[0], "authorization"), "token vault-github-secret");

    result = testing::run(curl_argv({"--cacert", (dir_.path() / "proxy-ca.crt").string(), "-x", proxy, "-X", "DELETE",
                                     "https://api.github.com:" + port + "/repos/octo/hello"}));
    EXPECT_EQ(parse_response(result.out).status, 403);

    const std::string wrong = "http://dev:wrong@127.0.0.1:" + std::to_string(explicit_port());
    result = testing::run(curl_argv({"--cacert", (dir_.path() / "proxy-ca.crt").string(), "-x", wrong,
                                     "https://api.github.com:" + port + "/repos/octo/hello/pulls"}));
    EXPECT_NE(result.status, 0);
    EXPECT_NE(result.out.find("407"), std::string::npos) << result.out;
    EXPECT_EQ(github_.requests().size(), 1u);
}

TEST_F(ProxyTest, ExplicitProxyPlainHttpStripsProxyHeaders) {
    const std::string proxy = "http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    const Result result = testing::run(curl_argv({"-x", proxy, "-H", "Proxy-Connection: keep-alive",
                                                  "http://plain.test:" + std::to_string(plain_.port()) + "/x?a=1"}));
    EXPECT_EQ(parse_response(result.out).status, 200) << result.out << result.err;
    ASSERT_EQ(plain_.requests().size(), 1u);
    EXPECT_EQ(plain_.requests()[0].target, "/x?a=1");
    EXPECT_EQ(header(plain_.requests()[0], "proxy-authorization"), "");
    EXPECT_EQ(header(plain_.requests()[0], "proxy-connection"), "");
}

// A listening socket on 127.0.0.1 with a port the kernel picked, as the supervisor makes them.
UniqueFd listening_socket() {
    UniqueFd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(socket.get(), 64) != 0) {
        return {};
    }
    return socket;
}

// The data plane's listeners (issue 24): made by the supervisor, served by
// the proxy, kept by their maker, so that the next proxy serves the same
// port with no moment in which another process could bind it.
TEST_F(ProxyTest, ListenersMadeElsewhereAreServedAndOutliveTheProxyThatServedThem) {
    const UniqueFd transparent = listening_socket();
    const UniqueFd explicit_socket = listening_socket();
    ASSERT_TRUE(transparent && explicit_socket);
    // The fixture's proxy, given the sockets (served instead of its endpoints).
    const auto serve = [&] {
        server_.reset();
        ProxyOptions options;
        options.transparent_socket = transparent.get();
        options.explicit_socket = explicit_socket.get();
        start(options);
    };
    serve();
    sockaddr_in bound{};
    socklen_t length = sizeof bound;
    ASSERT_EQ(::getsockname(transparent.get(), reinterpret_cast<sockaddr*>(&bound), &length), 0);
    EXPECT_EQ(transparent_port(), ntohs(bound.sin_port));
    EXPECT_EQ(github("/user").status, 200);
    const std::string proxy = "http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    const Result through_explicit =
        testing::run(curl_argv({"-x", proxy, "http://plain.test:" + std::to_string(plain_.port()) + "/x"}));
    EXPECT_EQ(parse_response(through_explicit.out).status, 200) << through_explicit.err;

    // The proxy goes (a data plane that died); its maker still holds the port, and the next proxy serves it.
    server_.reset();
    int accepting = 0;
    length = sizeof accepting;
    ASSERT_EQ(::getsockopt(transparent.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length), 0);
    EXPECT_EQ(accepting, 1);
    serve();
    EXPECT_EQ(github("/user").status, 200);

    // A socket that does not listen is refused with what it is.
    const UniqueFd unbound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ProxyOptions wrong;
    wrong.transparent_socket = unbound.get();
    try {
        ProxyServer refused(wrong, ProxyServices{&store_, ca_.get(), &origins_, nullptr, nullptr, nullptr});
        FAIL() << "a socket that does not listen was served";
    } catch (const std::system_error& error) {
        EXPECT_NE(std::string(error.what()).find("the transparent listener is not a listening socket"),
                  std::string::npos)
            << error.what();
    }
}

TEST_F(ProxyTest, PythonUrllibThroughTheExplicitProxy) {
    const std::string script = R"(
import ssl, sys, urllib.request
proxy = sys.argv[1]
context = ssl.create_default_context(cafile=sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({'https': proxy}),
                                     urllib.request.HTTPSHandler(context=context))
with opener.open(sys.argv[3]) as response:
    print(response.status, response.headers['X-TameFlare-Decision'])
)";
    const std::string proxy = "http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    const Result result =
        testing::run({"/usr/bin/env", "python3", "-c", script, proxy, (dir_.path() / "proxy-ca.crt").string(),
                      "https://api.github.com:" + std::to_string(github_.port()) + "/repos/octo/hello"});
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(result.out, "200 allowed\n");
}

TEST_F(ProxyTest, SoftEnforcementForwardsWhatItWouldDenyAndSaysSo) {
    configure({{"enforcement", "soft"}});
    const auto response = github("/repos/octo/hello", {"-X", "DELETE"});
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.headers.at("x-tameflare-decision"), "would_deny");
    EXPECT_EQ(response.headers.at("x-tameflare-action"), "github.repo.delete");
    ASSERT_EQ(github_.requests().size(), 1u);
    EXPECT_EQ(github_.requests()[0].method, "DELETE");
    const auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].decision, "would_deny");
    EXPECT_TRUE(records[0].forwarded);
}

// A host no connector serves: monitor forwards it and records it as
// http.unknown with would_deny (the traffic a policy must be written for);
// full denies it under the same name.
TEST_F(ProxyTest, MonitorForwardsAHostNoConnectorServesAndRecordsItAsUnknown) {
    TestUpstream unlisted({.address = "127.0.0.9"});
    server_.reset();
    hosts_["unlisted.test"] = {*IpAddress::parse("127.0.0.9")};
    start();
    origins_.set(Origin{Endpoint{*IpAddress::parse("127.0.0.9"), unlisted.port()}, "dev", "agent-1"});
    const std::string port = std::to_string(unlisted.port());
    const auto request = [&] {
        return parse_response(
            testing::run(
                curl_argv({"--connect-to", "unlisted.test:" + port + ":127.0.0.1:" + std::to_string(transparent_port()),
                           "http://unlisted.test:" + port + "/simple/requests/"}))
                .out);
    };
    configure({{"enforcement", "monitor"}});
    const auto monitored = request();
    EXPECT_EQ(monitored.status, 200);
    EXPECT_EQ(monitored.headers.at("x-tameflare-decision"), "would_deny");
    ASSERT_EQ(unlisted.requests().size(), 1u);
    auto records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].action, "http.unknown");
    EXPECT_EQ(records[0].host, "unlisted.test");
    EXPECT_EQ(records[0].decision, "would_deny");
    EXPECT_TRUE(records[0].forwarded);

    sink_.clear();
    configure({{"enforcement", "full"}});
    const auto denied = request();
    EXPECT_EQ(denied.status, 403);
    EXPECT_EQ(unlisted.requests().size(), 1u);
    records = sink_.wait_for(1);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].action, "http.unknown");
    EXPECT_EQ(records[0].decision, "denied");
}

TEST_F(ProxyTest, AnAllowedNameThatResolvesToLoopbackIsNotReachedUnlessConfigured) {
    server_.reset();
    ProxyOptions options;
    options.transparent_listen = Endpoint{*IpAddress::parse("127.0.0.1"), 0};
    options.system_resolver = false;
    options.hosts = hosts_;
    options.upstream_ca_file = test_ca_.ca_file().string();  // and no allowed_upstreams
    server_.emplace(options, ProxyServices{&store_, ca_.get(), &origins_, &credentials_, &approvals_, &sink_});
    server_->start();
    const auto response = github("/repos/octo/hello/pulls");
    EXPECT_EQ(response.status, 403);
    EXPECT_NE(response.body.find("loopback"), std::string::npos) << response.body;
    EXPECT_TRUE(github_.requests().empty());
}

TEST_F(ProxyTest, MissingVaultCredentialIs502) {
    {
        std::lock_guard lock(credentials_.mutex_);
        credentials_.values.erase("github-pat");
    }
    const auto response = github("/repos/octo/hello/pulls");
    EXPECT_EQ(response.status, 502);
    EXPECT_NE(response.body.find("credential_missing"), std::string::npos);
    EXPECT_TRUE(github_.requests().empty());
}

// git with no user or system configuration, and an identity for commits.
Result git(std::vector<std::string> args, const std::string& ca_file = "") {
    std::vector<std::string> argv{"/usr/bin/env",
                                  "GIT_CONFIG_GLOBAL=/dev/null",
                                  "GIT_CONFIG_NOSYSTEM=1",
                                  "GIT_TERMINAL_PROMPT=0",
                                  "GIT_SSL_CAINFO=" + ca_file,
                                  "git",
                                  "-c",
                                  "user.name=Agent",
                                  "-c",
                                  "user.email=agent@example.com",
                                  "-c",
                                  "init.defaultBranch=main"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run(argv);
}

TEST_F(ProxyTest, GitClonesThroughTheProxyAndItsPushIsDecidedAsAPush) {
    const auto repos = dir_.path() / "repos";
    const auto work = dir_.path() / "work";
    ASSERT_EQ(git({"init", "-q", "--bare", (repos / "octo/hello.git").string()}).status, 0);
    ASSERT_EQ(git({"init", "-q", work.string()}).status, 0);
    std::ofstream(work / "README") << "hello\n";
    ASSERT_EQ(git({"-C", work.string(), "add", "README"}).status, 0);
    ASSERT_EQ(git({"-C", work.string(), "commit", "-q", "-m", "first"}).status, 0);
    ASSERT_EQ(git({"-C", work.string(), "push", "-q", (repos / "octo/hello.git").string(), "HEAD:main"}).status, 0);

    const auto leaf = test_ca_.issue({"github.com"}, {}, dir_.path(), "git");
    // GitHub's git endpoints take HTTP Basic with "x-access-token" and the token; the backend refuses anything else.
    const std::string basic = "Basic eC1hY2Nlc3MtdG9rZW46dmF1bHQtZ2l0aHViLXNlY3JldA==";  // x-access-token:<vault's>
    Subprocess backend({"/usr/bin/env", "python3", TF_SOURCE_DIR "/tests/daemon/proxy/git_http_backend.py",
                        "127.0.0.12", leaf.cert_file.string(), leaf.key_file.string(), repos.string(), basic});
    ASSERT_TRUE(backend.wait_for_stderr("listening on ")) << backend.err();
    const std::string port = backend.err().substr(backend.err().find("listening on ") + 13,
                                                  backend.err().find('\n') - backend.err().find("listening on ") - 13);
    server_.reset();
    hosts_["github.com"] = {*IpAddress::parse("127.0.0.12")};
    start();

    const std::string proxy =
        "http.proxy=http://dev:" + std::string(kToken) + "@127.0.0.1:" + std::to_string(explicit_port());
    const std::string ca = (dir_.path() / "proxy-ca.crt").string();
    const auto clone = dir_.path() / "clone";
    const Result cloned =
        git({"-c", proxy, "clone", "-q", "https://github.com:" + port + "/octo/hello.git", clone.string()}, ca);
    ASSERT_EQ(cloned.status, 0) << cloned.err << backend.err();
    EXPECT_TRUE(std::filesystem::exists(clone / "README"));
    EXPECT_TRUE(backend.wait_for_stderr("authorization: " + basic)) << backend.err();
    // The REST API's spelling would not do on the git endpoints: the backend checks.
    const Result rest_spelling =
        testing::run({"/usr/bin/curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                      "Authorization: token vault-github-secret",
                      "https://127.0.0.12:" + port + "/octo/hello.git/info/refs?service=git-upload-pack"});
    EXPECT_EQ(rest_spelling.out, "401");

    std::ofstream(clone / "README") << "changed by the agent\n";
    ASSERT_EQ(git({"-C", clone.string(), "commit", "-q", "-am", "second"}).status, 0);
    const Result pushed = git({"-C", clone.string(), "-c", proxy, "push", "-q", "origin", "HEAD:main"}, ca);
    EXPECT_NE(pushed.status, 0);
    EXPECT_NE(pushed.err.find("403"), std::string::npos) << pushed.err;
    // git sees the 403 before the proxy's record of it may be in: wait for it.
    bool denied_push = false;
    for (int i = 0; i < 100 && !denied_push; ++i) {
        for (const auto& record : sink_.wait_for(1))
            denied_push |= record.action == "github.git.push" && record.status == 403;
        if (!denied_push) std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(denied_push);
}

// Kilobytes of resident memory, or threads, of this process.
long proc_status(const std::string& key) {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with(key + ":")) return std::stol(line.substr(key.size() + 1));
    }
    return -1;
}

TEST_F(ProxyTest, TenThousandHeldRequestsNeedNoThreadEach) {
    constexpr std::size_t kHeld = 10000;
    // The proxy's side of each connection is a file here; the clients are
    // another process (python), so each process needs ~10,000 files.
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur < kHeld + 1000) {
        GTEST_SKIP() << "the open-file limit (" << files.rlim_max << ") is below " << kHeld + 1000;
    }
    configure({{"approval_timeout_seconds", 600},
               {"rate_limit", {{"requests", 0}}},  // one agent, 10,000 requests: no limit
               {"connectors", {{"plain", {{"rules", {{{"action", "http.put"}, {"decision", "require_approval"}}}}}}}}});
    origins_.set(plain_origin());
    const long rss_before = proc_status("VmRSS");
    const long threads_before = proc_status("Threads");

    const std::string clients = R"(
import resource, socket, sys
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
port, count, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
request = ('PUT /held HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n\r\n' % host).encode()
connections = []
for _ in range(count):
    connection = socket.create_connection(('127.0.0.1', port))
    connection.sendall(request)
    connections.append(connection)
print('sent', file=sys.stderr, flush=True)
answered = 0
for connection in connections:
    connection.settimeout(60)
    try:
        answered += connection.recv(64).startswith(b'HTTP/1.1 403')
    except OSError:
        pass
print(answered)
)";
    Subprocess python({"/usr/bin/env", "python3", "-c", clients, std::to_string(transparent_port()),
                       std::to_string(kHeld), "plain.test:" + std::to_string(plain_.port())});
    ASSERT_TRUE(python.wait_for_stderr("sent", 0, 120s)) << python.err();
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (approvals_.size() < kHeld && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
    ASSERT_EQ(approvals_.size(), kHeld);
    EXPECT_EQ(server_->counters().held, kHeld);
    const long rss_held = proc_status("VmRSS");
    EXPECT_EQ(proc_status("Threads"), threads_before);  // no thread per connection
    const double per_connection_kib = static_cast<double>(rss_held - rss_before) / kHeld;
    std::printf("%zu held requests: RSS %ld -> %ld KiB, %.1f KiB per held connection, %ld threads\n", kHeld, rss_before,
                rss_held, per_connection_kib, threads_before);
#ifndef __SANITIZE_ADDRESS__  // the sanitizer's redzones are not the proxy's
    EXPECT_LT(per_connection_kib, 64.0);
#endif

    // Denied at once: every client gets its 403.
    EXPECT_EQ(approvals_.deny_if([](const ApprovalRequest&) { return true; }, "load test"), kHeld);
    EXPECT_EQ(python.wait(), 0) << python.err();
    EXPECT_EQ(python.out(), std::to_string(kHeld) + "\n");
    EXPECT_TRUE(plain_.requests().empty());
}

TEST(RedactTarget, HidesSecretLookingQueryValues) {
    EXPECT_EQ(redact_target("/a?access_token=abc&page=2&API_KEY=x&sig"),
              "/a?access_token=REDACTED&page=2&API_KEY=REDACTED&sig");
    EXPECT_EQ(redact_target("/plain"), "/plain");
}

}  // namespace
}  // namespace tameflare::proxy
