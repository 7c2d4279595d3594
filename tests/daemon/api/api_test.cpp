// The REST control socket of a real tameflared, driven by real clients over
// the unix socket: a Beast client in this process (root, so owner), curl and
// python3 run as other users with setpriv (each role from its group), and raw
// bytes for the garbage. The OpenAPI document is held to the routes the
// server answers.
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "common/unique_fd.h"
#include "daemon/api/api_server.h"
#include "tests/support/daemon_process.h"
#include "tests/support/run_as.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_upstream.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = net::local::stream_protocol;
using json = nlohmann::json;
using namespace std::chrono_literals;

// "one:token" in base64; the gateway stores sha256("token").
constexpr const char* kProxyAuthorization = "Basic b25lOnRva2Vu";
constexpr const char* kTokenSha256 = "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0";

// Users with no entry in /etc/passwd, each given one role's group by gid.
constexpr Identity kOwner{4001, "4241"};
constexpr Identity kAdmin{4002, "4242"};
constexpr Identity kMember{4003, "4243"};
constexpr Identity kViewer{4004, "4244"};
constexpr Identity kNobody{4005, ""};

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

struct Reply {
    int status = 0;
    std::string content_type;
    std::string allow;
    std::string body;
    [[nodiscard]] json doc() const { return json::parse(body, nullptr, false); }
    [[nodiscard]] std::string code() const {
        const auto parsed = doc();
        return parsed.is_object() ? parsed.value("error", std::string()) : std::string();
    }
};

std::ostream& operator<<(std::ostream& out, const Reply& reply) {
    return out << reply.status << " " << reply.content_type << " " << reply.body;
}

// A Beast HTTP/1.1 client on the unix socket, keeping its connection.
class BeastClient {
public:
    explicit BeastClient(const fs::path& socket) {
        socket_.connect(local::endpoint(socket.string()));
        // A server that never answers fails the test instead of hanging it.
        const timeval timeout{20, 0};
        ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }

    Reply request(http::verb method, const std::string& target, const std::string& body = "",
                  const std::string& content_type = "application/json") {
        http::request<http::string_body> request{method, target, 11};
        request.set(http::field::host, "localhost");
        if (!body.empty() || method == http::verb::put || method == http::verb::post) {
            request.set(http::field::content_type, content_type);
            request.body() = body;
            request.prepare_payload();
        }
        http::write(socket_, request);
        http::response_parser<http::string_body> parser;
        parser.body_limit(std::uint64_t{64} << 20);
        http::read(socket_, buffer_, parser);
        const auto& response = parser.get();
        return {static_cast<int>(response.result_int()), std::string(response[http::field::content_type]),
                std::string(response[http::field::allow]), response.body()};
    }
    Reply get(const std::string& target) { return request(http::verb::get, target); }

    // Sends the request and reads only the response head (an event stream).
    Reply head_of(const std::string& target) {
        http::request<http::empty_body> request{http::verb::get, target, 11};
        request.set(http::field::host, "localhost");
        http::write(socket_, request);
        http::response_parser<http::empty_body> parser;
        http::read_header(socket_, buffer_, parser);
        return {static_cast<int>(parser.get().result_int()), std::string(parser.get()[http::field::content_type]), "",
                ""};
    }

private:
    net::io_context io_;
    local::socket socket_{io_};
    beast::flat_buffer buffer_;
};

// What a held request through the explicit proxy got.
struct ProxyReply {
    unsigned status = 0;
    std::string upstream;  // X-Upstream: "test" when the upstream answered
    std::string body;
};

ProxyReply proxy_request(const std::string& listen, http::verb method, const std::string& url) {
    net::io_context io;
    net::ip::tcp::socket socket(io);
    const auto colon = listen.rfind(':');
    socket.connect({net::ip::make_address(listen.substr(0, colon)),
                    static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)))});
    http::request<http::string_body> request{method, url, 11};
    request.set(http::field::host, url.substr(7, url.find('/', 7) - 7));
    request.set(http::field::proxy_authorization, kProxyAuthorization);
    request.set(http::field::content_type, "application/json");
    request.body() = R"({"merge": true})";
    request.prepare_payload();
    http::write(socket, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    return {response.result_int(), std::string(response["X-Upstream"]), response.body()};
}

UniqueFd connect_to(const fs::path& socket) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.c_str(), sizeof address.sun_path - 1);
    if (fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fd.reset();
    return fd;
}

// Everything until the peer closes (or 10 s of silence), then "<closed>".
std::string read_all(int fd) {
    std::string out;
    char buffer[4096];
    pollfd wait{fd, POLLIN, 0};
    while (::poll(&wait, 1, 10000) > 0) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n <= 0) return out + "<closed>";
        out.append(buffer, static_cast<std::size_t>(n));
    }
    return out + "<timed out>";
}

// A python3 http.client over AF_UNIX: one request, or an event stream whose
// lines go to stderr as they come.
constexpr const char* kPythonClient = R"PY(
import http.client, json, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path
    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.unix_path)
        self.sock = sock

mode, path, method, target = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
connection = UnixConnection(path)
headers = {"Content-Type": "application/json"} if body is not None else {}
connection.request(method, target, body=body, headers=headers)
response = connection.getresponse()
if mode == "request":
    print(response.status)
    print(response.read().decode())
else:
    sys.stderr.write("status %d %s\n" % (response.status, response.getheader("Content-Type")))
    sys.stderr.flush()
    while True:
        line = response.readline()
        if not line:
            break
        sys.stderr.write(line.decode())
        sys.stderr.flush()
)PY";

class Api : public ::testing::Test {
protected:
    void SetUp() override {
        // The users the tests become must reach the socket and the script.
        fs::permissions(root_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
        std::ofstream(root_ / "client.py") << kPythonClient;
        write_config();
        start();
    }

    // Root is owner anyway; a test run without root is owner through its group.
    static std::string owner_group() { return ::geteuid() == 0 ? "4241" : std::to_string(::getegid()); }

    void TearDown() override {
        // A 500 is a bug whatever the input was.
        if (daemon_) {
            EXPECT_FALSE(contains(daemon_->log(), "REST call failed")) << daemon_->log();
        }
    }

    void write_config() {
        fs::create_directories(root_ / "gateways.d");
        std::ofstream(root_ / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run", "agents": {"enabled": false},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false, "allowed_upstreams": ["127.0.0.1"],
                            "hosts": {"plain.test": ["127.0.0.1"]}},
                  "api": {"socket": ")"
            << socket_.string() << R"(", "socket_group": "", "socket_mode": "0666",
                          "role_groups": {"owner": ")"
            << owner_group() << R"(", "admin": "4242", "member": "4243", "viewer": "4244"}}})";
        write_gateway();
    }
    void write_gateway(const std::string& rules = R"([{"action": "http.post", "decision": "require_approval"}])") {
        std::ofstream(root_ / "gateways.d" / "one.json")
            << R"({"name": "one", "description": "the test gateway", "proxy_token_sha256": ")" << kTokenSha256
            << R"(", "rate_limit": {"requests": 0}, "approval_timeout_seconds": 60,
                  "connectors": {"site": {"connector": "http", "domains": ["plain.test"], "preset": "read_only",
                                          "rules": )"
            << rules << "}}}";
    }

    void start() {
        daemon_.reset();
        daemon_ = std::make_unique<DaemonProcess>(TAMEFLARED_BINARY, root_ / "tameflared.json",
                                                  root_ / ("daemon" + std::to_string(++starts_) + ".log"));
        ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
        ASSERT_EQ(daemon_->field("API_SOCKET"), socket_.string()) << daemon_->log();
    }

    std::string url(const std::string& path) const {
        return "http://plain.test:" + std::to_string(upstream_.port()) + path;
    }

    // curl --unix-socket, as `who` (nullopt: as root).
    Reply curl(const std::optional<Identity>& who, const std::string& method, const std::string& target,
               const std::optional<std::string>& body = std::nullopt) const {
        std::vector<std::string> argv{"/usr/bin/curl",
                                      "-q",
                                      "-sS",
                                      "--max-time",
                                      "20",
                                      "--unix-socket",
                                      socket_.string(),
                                      "-X",
                                      method,
                                      "-w",
                                      "\n%{http_code} %{content_type}"};
        if (body) {
            argv.insert(argv.end(), {"-H", "Content-Type: application/json", "--data-binary", *body});
        }
        argv.push_back("http://localhost" + target);
        const auto result = run(who ? as(*who, argv) : argv);
        Reply reply;
        const auto last = result.out.rfind('\n');
        if (result.status != 0 || last == std::string::npos) {
            reply.body = "curl failed: " + result.err;
            return reply;
        }
        std::istringstream tail(result.out.substr(last + 1));
        tail >> reply.status >> reply.content_type;
        reply.body = result.out.substr(0, last);
        return reply;
    }

    // python3 http.client, as `who`.
    Reply python(const Identity& who, const std::string& method, const std::string& target,
                 const std::optional<std::string>& body = std::nullopt) const {
        std::vector<std::string> argv{
            "/usr/bin/python3", (root_ / "client.py").string(), "request", socket_.string(), method, target};
        if (body) argv.push_back(*body);
        const auto result = run(as(who, argv));
        Reply reply;
        const auto newline = result.out.find('\n');
        if (result.status != 0 || newline == std::string::npos) {
            reply.body = "python failed: " + result.err;
            return reply;
        }
        reply.status = std::stoi(result.out.substr(0, newline));
        reply.body = result.out.substr(newline + 1);
        return reply;
    }

    // An event stream read by python3 as `who`; its lines arrive on stderr.
    std::unique_ptr<Subprocess> stream(const Identity& who, const std::string& target) const {
        return std::make_unique<Subprocess>(
            as(who, {"/usr/bin/python3", (root_ / "client.py").string(), "events", socket_.string(), "GET", target}));
    }

    BeastClient client() const { return BeastClient(socket_); }

    TempDir temp_{"tf-api"};
    const fs::path root_ = temp_.path();
    const fs::path socket_ = root_ / "api.sock";
    TestUpstream upstream_;
    std::unique_ptr<DaemonProcess> daemon_;
    int starts_ = 0;
};

// ---------------------------------------------------------------------------

TEST_F(Api, OpenApiDocumentIsValidAndServed) {
    auto beast = client();
    const auto reply = beast.get("/v1/openapi.json");
    ASSERT_EQ(reply.status, 200) << reply;
    EXPECT_EQ(reply.content_type, "application/json");
    const auto document = reply.doc();
    ASSERT_TRUE(document.is_object()) << reply.body.substr(0, 200);
    EXPECT_EQ(document["openapi"], "3.0.3");
    EXPECT_EQ(document, json::parse(api::ApiServer::openapi()));
    ASSERT_TRUE(document["components"]["schemas"].contains("Error"));
    EXPECT_EQ(document["components"]["schemas"]["Error"]["required"], json({"error", "message", "hint"}));

    // Every reference resolves.
    std::vector<std::string> broken;
    std::function<void(const json&)> walk = [&](const json& node) {
        if (node.is_object()) {
            if (const auto ref = node.find("$ref"); ref != node.end() && ref->is_string()) {
                const auto pointer = ref->get<std::string>();
                if (!pointer.starts_with("#/") || !document.contains(json::json_pointer(pointer.substr(1)))) {
                    broken.push_back(pointer);
                }
            }
            for (const auto& [key, value] : node.items()) walk(value);
        } else if (node.is_array()) {
            for (const auto& value : node) walk(value);
        }
    };
    walk(document);
    EXPECT_TRUE(broken.empty()) << broken.front();

    // Where the OpenAPI validator is installed, it has the last word.
    if (run({"/usr/bin/env", "python3", "-c", "import openapi_spec_validator"}).status == 0) {
        const auto checked = run(
            {"/usr/bin/env", "python3", "-c",
             "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
             std::string(TF_SOURCE_DIR) + "/daemon/api/openapi.json"});
        EXPECT_EQ(checked.status, 0) << checked.err;
    }
}

TEST_F(Api, EveryDocumentedRouteIsServedAndEveryServedRouteIsDocumented) {
    const auto document = json::parse(api::ApiServer::openapi());
    std::set<std::pair<std::string, std::string>> documented;
    for (const auto& [path, operations] : document["paths"].items()) {
        for (const auto& [method, operation] : operations.items()) {
            std::string upper = method;
            for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            documented.emplace(upper, path);
        }
    }
    std::set<std::pair<std::string, std::string>> served;
    for (const auto& route : api::ApiServer::routes()) served.emplace(route.method, route.path);
    EXPECT_EQ(documented, served);

    // Each documented route answered with the parameters filled in: an
    // unknown id may be 404, but never the unknown route's not_found nor a 405.
    for (const auto& [method, path] : documented) {
        std::string target = path;
        for (const auto* param : {"{name}", "{id}"}) {
            if (const auto at = target.find(param); at != std::string::npos) {
                target.replace(at, std::strlen(param), "nosuch");
            }
        }
        auto beast = client();
        Reply reply;
        if (target == "/v1/events") {
            reply = beast.head_of(target);
            EXPECT_EQ(reply.content_type, "text/event-stream");
        } else {
            // An empty object: mutating routes refuse it (bad_field) rather than act.
            reply = beast.request(http::string_to_verb(method), target, method == "GET" ? "" : "{}");
        }
        EXPECT_NE(reply.status, 405) << method << " " << target << ": " << reply;
        EXPECT_NE(reply.code(), "not_found") << method << " " << target << ": " << reply;
        EXPECT_NE(reply.status, 500) << method << " " << target << ": " << reply;
    }
    // The state is as it was.
    auto beast = client();
    EXPECT_EQ(beast.get("/v1/kill-switch").doc()["active"], false);
}

// The shipped setting: mode 0660, group tameflare-viewer. A user who is only
// in the member (or admin, owner) group still connects: the daemon gives each
// role group an ACL entry on the socket. A user with no role cannot connect.
TEST_F(Api, EveryRoleGroupConnectsToASocketOfTheViewerGroupAndNobodyElse) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    const fs::path config = root_ / "tameflared.json";
    std::string text = slurp(config);
    const std::string open_socket = R"("socket_group": "", "socket_mode": "0666")";
    ASSERT_NE(text.find(open_socket), std::string::npos);
    text.replace(text.find(open_socket), open_socket.size(), R"("socket_group": "4244", "socket_mode": "0660")");
    std::ofstream(config) << text;
    daemon_->process().signal(SIGTERM);
    daemon_->process().wait();
    start();
    struct stat info {};
    ASSERT_EQ(::stat(socket_.c_str(), &info), 0);
    EXPECT_EQ(info.st_gid, 4244U);
    for (const auto& who : {kOwner, kAdmin, kMember, kViewer}) {
        const auto status = curl(who, "GET", "/v1/status");
        EXPECT_EQ(status.status, 200) << who.uid << ": " << status;
    }
    const auto member_answer = curl(kMember, "POST", "/v1/approvals/none/approve", "{}");
    EXPECT_EQ(member_answer.status, 404) << "a member reaches the approval operation: " << member_answer;
    const auto stranger = curl(kNobody, "GET", "/v1/status");
    EXPECT_EQ(stranger.status, 0) << stranger;
    EXPECT_TRUE(contains(stranger.body, "curl failed")) << stranger;
}

TEST_F(Api, SocketHasTheConfiguredModeAndAStaleOneIsReplaced) {
    struct stat info {};
    ASSERT_EQ(::stat(socket_.c_str(), &info), 0);
    EXPECT_TRUE(S_ISSOCK(info.st_mode));
    EXPECT_EQ(info.st_mode & 07777, 0666U);
    EXPECT_EQ(info.st_gid, ::getegid());  // socket_group "": the daemon's own (root's)

    // A crash leaves the socket file behind; the next daemon replaces it.
    daemon_->process().signal(SIGKILL);
    daemon_->process().wait();
    ASSERT_TRUE(fs::exists(fs::symlink_status(socket_)));
    start();
    auto beast = client();
    EXPECT_EQ(beast.get("/v1/status").status, 200);
}

TEST_F(Api, StopsPromptlyWithAStreamAndAnIdleConnectionOpen) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    auto events = stream(kViewer, "/v1/events");
    ASSERT_TRUE(events->wait_for_stderr(": connected")) << events->err();
    const auto idle = connect_to(socket_);
    ASSERT_TRUE(idle);
    auto beast = client();
    ASSERT_EQ(beast.get("/v1/status").status, 200);

    daemon_->process().signal(SIGTERM);
    auto exited = std::async(std::launch::async, [&] { return daemon_->process().wait(); });
    if (exited.wait_for(15s) != std::future_status::ready) {
        daemon_->process().signal(SIGKILL);
        exited.wait();
        FAIL() << "tameflared did not stop within 15 s\n" << daemon_->log();
    }
    EXPECT_EQ(exited.get(), 0) << daemon_->log();
    // The stream's client saw its end; the socket file went with the daemon.
    EXPECT_EQ(events->wait(), 0) << events->err();
    EXPECT_FALSE(fs::exists(fs::symlink_status(socket_)));
    EXPECT_TRUE(contains(read_all(idle.get()), "<closed>"));
}

TEST_F(Api, EachRoleMayDoWhatTheDocsSay) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    // viewer: reads, cannot answer approvals (the hint names the member group) nor change anything.
    const auto status = curl(kViewer, "GET", "/v1/status");
    ASSERT_EQ(status.status, 200) << status;
    EXPECT_EQ(status.doc()["caller"]["role"], "viewer") << status;
    EXPECT_EQ(status.doc()["caller"]["uid"], kViewer.uid) << status;
    EXPECT_EQ(status.doc()["gateways"], 1) << status;
    EXPECT_EQ(curl(kViewer, "GET", "/v1/gateways").doc()["gateways"][0]["name"], "one");
    const auto refused = curl(kViewer, "POST", "/v1/approvals/whatever/approve", "{}");
    EXPECT_EQ(refused.status, 403) << refused;
    EXPECT_EQ(refused.code(), "forbidden") << refused;
    EXPECT_TRUE(contains(refused.doc()["hint"], "4243")) << refused;
    const auto no_level = curl(kViewer, "PUT", "/v1/gateways/one/enforcement", R"({"level": "monitor"})");
    EXPECT_EQ(no_level.status, 403) << no_level;
    EXPECT_TRUE(contains(no_level.doc()["hint"], "4242")) << no_level;
    EXPECT_EQ(curl(kViewer, "GET", "/v1/vault").status, 403);

    // member: answers approvals (this one is unknown: past the role check).
    const auto member = curl(kMember, "POST", "/v1/approvals/whatever/approve", R"({"note": "fine"})");
    EXPECT_EQ(member.status, 404) << member;
    EXPECT_EQ(member.code(), "unknown_approval") << member;
    EXPECT_EQ(curl(kMember, "PUT", "/v1/gateways/one/enforcement", R"({"level": "monitor"})").status, 403);

    // admin: sets the enforcement level; not the kill switch (owner's, the hint says whose).
    const auto level = curl(kAdmin, "PUT", "/v1/gateways/one/enforcement", R"({"level": "monitor"})");
    ASSERT_EQ(level.status, 200) << level;
    EXPECT_EQ(level.doc()["enforcement"], "monitor") << level;
    EXPECT_EQ(curl(kViewer, "GET", "/v1/gateways/one").doc()["enforcement"], "monitor");
    const auto no_switch = curl(kAdmin, "PUT", "/v1/kill-switch", R"({"active": true})");
    EXPECT_EQ(no_switch.status, 403) << no_switch;
    EXPECT_TRUE(contains(no_switch.doc()["hint"], "4241")) << no_switch;

    // owner: the kill switch, on and off.
    const auto on = curl(kOwner, "PUT", "/v1/kill-switch", R"({"active": true, "reason": "drill"})");
    ASSERT_EQ(on.status, 200) << on;
    EXPECT_EQ(on.doc()["active"], true) << on;
    EXPECT_EQ(on.doc()["all"], true) << on;
    const auto seen = curl(kViewer, "GET", "/v1/kill-switch").doc();
    EXPECT_EQ(seen["active"], true) << seen;
    EXPECT_EQ(seen["reason"], "drill") << seen;
    EXPECT_TRUE(contains(seen["actor"], "uid:4001")) << seen;
    const auto off = curl(kOwner, "PUT", "/v1/kill-switch", R"({"active": false})");
    ASSERT_EQ(off.status, 200) << off;
    EXPECT_EQ(off.doc()["active"], false) << off;

    // no role: their own agents (none), nothing else.
    const auto agents = curl(kNobody, "GET", "/v1/agents");
    ASSERT_EQ(agents.status, 200) << agents;
    EXPECT_EQ(agents.doc(), json({{"agents", json::array()}})) << agents;
    const auto nobody = curl(kNobody, "GET", "/v1/status");
    EXPECT_EQ(nobody.status, 403) << nobody;
    EXPECT_EQ(nobody.code(), "forbidden") << nobody;
    EXPECT_TRUE(contains(nobody.doc()["hint"], "4244")) << nobody;
    EXPECT_EQ(curl(kNobody, "GET", "/metrics").status, 403);

    // The changes were audited with who made them.
    auto beast = client();
    const auto audit = beast.get("/v1/audit?event=kill_switch.&format=json");
    ASSERT_EQ(audit.status, 200) << audit;
    EXPECT_TRUE(contains(audit.body, "uid:4001")) << audit;
}

TEST_F(Api, PythonClientsGetTheSameAnswers) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    const auto status = python(kViewer, "GET", "/v1/status");
    ASSERT_EQ(status.status, 200) << status;
    EXPECT_EQ(status.doc()["caller"]["role"], "viewer") << status;
    const auto refused = python(kViewer, "PUT", "/v1/kill-switch", R"({"active": true})");
    EXPECT_EQ(refused.status, 403) << refused;
    EXPECT_EQ(refused.code(), "forbidden") << refused;
    const auto owner = python(kOwner, "GET", "/v1/kill-switch");
    EXPECT_EQ(owner.status, 200) << owner;
    EXPECT_EQ(owner.doc()["active"], false) << owner;
    const auto test = python(kViewer, "POST", "/v1/policy/test",
                             R"({"gateway": "one", "method": "POST", "url": "http://plain.test/merge"})");
    ASSERT_EQ(test.status, 200) << test;
    EXPECT_TRUE(contains(test.body, "require_approval")) << test;
    const auto denied_test = python(kViewer, "POST", "/v1/policy/test",
                                    R"({"gateway": "one", "method": "DELETE", "url": "http://plain.test/x"})");
    ASSERT_EQ(denied_test.status, 200) << denied_test;
    EXPECT_FALSE(contains(denied_test.body, "require_approval")) << denied_test;
}

TEST_F(Api, BadInputIsRefusedWithItsCodeAndChangesNothing) {
    auto beast = client();
    const auto expect_error = [&](http::verb method, const std::string& target, const std::string& body, int status,
                                  const std::string& code, const std::string& in_message = "") {
        const auto reply = beast.request(method, target, body);
        EXPECT_EQ(reply.status, status) << target << " " << body << ": " << reply;
        EXPECT_EQ(reply.code(), code) << target << " " << body << ": " << reply;
        EXPECT_EQ(reply.content_type, "application/json") << reply;
        const auto doc = reply.doc();
        EXPECT_TRUE(doc.contains("message") && doc.contains("hint")) << reply;
        if (!in_message.empty()) {
            EXPECT_TRUE(contains(doc.value("message", ""), in_message)) << reply;
        }
    };
    // Unknown things.
    expect_error(http::verb::get, "/v1/gateways/nosuch", "", 404, "unknown_gateway");
    expect_error(http::verb::get, "/v1/approvals/nosuch", "", 404, "unknown_approval");
    expect_error(http::verb::post, "/v1/approvals/nosuch/deny", "", 404, "unknown_approval");
    expect_error(http::verb::get, "/v1/agents/nosuch", "", 404, "unknown_agent");
    expect_error(http::verb::delete_, "/v1/vault/nosuch", "", 404, "unknown_secret");
    expect_error(http::verb::put, "/v1/gateways/nosuch/enforcement", R"({"level": "soft"})", 404, "unknown_gateway");
    expect_error(http::verb::get, "/v1/nosuch", "", 404, "not_found");
    expect_error(http::verb::get, "/v1/status/", "", 404, "not_found");
    // Path parameters are percent-decoded: %6Fne is "one".
    EXPECT_EQ(beast.get("/v1/gateways/%6Fne").doc()["name"], "one");
    expect_error(http::verb::get, "/v1/gateways/%zz", "", 400, "bad_request");
    expect_error(http::verb::get, "/v1/gateways/a%00b", "", 400, "bad_request");
    // Wrong method: 405 with Allow.
    const auto wrong = beast.request(http::verb::delete_, "/v1/kill-switch");
    EXPECT_EQ(wrong.status, 405) << wrong;
    EXPECT_EQ(wrong.code(), "method_not_allowed") << wrong;
    EXPECT_EQ(wrong.allow, "GET, PUT") << wrong;
    // Malformed JSON, wrong types, missing fields.
    expect_error(http::verb::put, "/v1/kill-switch", R"({"active": tru)", 400, "bad_json");
    expect_error(http::verb::put, "/v1/kill-switch", R"([true])", 400, "bad_json");
    expect_error(http::verb::put, "/v1/kill-switch", "\xff\xfe{}", 400, "bad_json");
    expect_error(http::verb::put, "/v1/kill-switch", R"({"active": "yes"})", 400, "bad_field", "active");
    expect_error(http::verb::put, "/v1/kill-switch", R"({"active": true, "scope": 7})", 400, "bad_field", "scope");
    expect_error(http::verb::put, "/v1/kill-switch", R"({"active": true, "scope": "planet:earth"})", 400, "bad_field",
                 "scope");
    expect_error(http::verb::put, "/v1/kill-switch", R"({})", 400, "bad_field", "active");
    expect_error(http::verb::put, "/v1/gateways/one/enforcement", R"({"level": ["full"]})", 400, "bad_field", "level");
    expect_error(http::verb::put, "/v1/gateways/one/enforcement", R"({"level": "max"})", 400, "bad_field");
    expect_error(http::verb::post, "/v1/approvals/nosuch/approve", R"({"note": 5})", 400, "bad_field", "note");
    expect_error(http::verb::put, "/v1/vault/token", R"({"value": null})", 400, "bad_field", "value");
    expect_error(http::verb::put, "/v1/vault/token", R"({"value": "s3cret", "connector": {}})", 400, "bad_field",
                 "connector");
    expect_error(http::verb::post, "/v1/policy/test", R"({"gateway": "one", "url": 1})", 400, "bad_field", "url");
    expect_error(http::verb::post, "/v1/policy/test",
                 R"({"gateway": "one", "url": "http://plain.test/", "headers": {"x": 1}})", 400, "bad_field",
                 "headers");
    // Log filters.
    expect_error(http::verb::get, "/v1/traffic?since=yesterday", "", 400, "bad_field", "since");
    expect_error(http::verb::get, "/v1/traffic?format=xml", "", 400, "bad_field", "format");
    expect_error(http::verb::get, "/v1/traffic?limit=-1", "", 400, "bad_field", "limit");
    expect_error(http::verb::get, "/v1/traffic?event=x", "", 400, "bad_field", "event");
    expect_error(http::verb::get, "/v1/audit?decision=denied", "", 400, "bad_field", "decision");
    expect_error(http::verb::get, "/v1/events?types=nonsense", "", 400, "bad_field", "types");
    // Too large: refused from the Content-Length, before the body is read.
    expect_error(http::verb::put, "/v1/kill-switch", std::string(std::size_t{1} << 21, ' '), 413, "too_large");

    // curl agrees on the large body (it sends Expect: 100-continue) and on a plain one.
    auto big = std::string(R"({"active": true, "reason": ")") + std::string(std::size_t{3} << 20, 'x') + "\"}";
    const fs::path file = root_ / "big.json";
    std::ofstream(file) << big;
    const auto curled = curl(std::nullopt, "PUT", "/v1/kill-switch", "@" + file.string());
    EXPECT_EQ(curled.status, 413) << curled.body.substr(0, 300);
    EXPECT_EQ(curled.code(), "too_large") << curled.body.substr(0, 300);

    // Nothing changed, and the daemon still serves a fresh client.
    auto fresh = client();
    const auto kill = fresh.get("/v1/kill-switch").doc();
    EXPECT_EQ(kill["active"], false) << kill;
    EXPECT_EQ(fresh.get("/v1/gateways/one").doc()["enforcement"], "full");
    EXPECT_EQ(fresh.get("/v1/vault").doc()["secrets"], json::array());
}

// Raw bytes on a fresh connection; what came back before it was closed.
std::string raw_exchange(const fs::path& socket, const std::string& bytes) {
    const auto fd = connect_to(socket);
    if (!fd) return "connect failed";
    (void)::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::shutdown(fd.get(), SHUT_WR);
    return read_all(fd.get());
}

TEST_F(Api, GarbageOnTheSocketEndsOnlyThatConnection) {
    std::string binary;
    for (int i = 0; i < 4096; ++i) binary += static_cast<char>((i * 7919) & 0xff);
    const std::vector<std::string> garbage{
        std::string("\0\0\0\0\xff\xfe garbage\r\n\r\n", 18),
        "GET /v1/status HTTP/9.9\r\n\r\n",
        "GET\r\n\r\n",
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /v1/status HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n",
        "GET v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        "PUT /v1/kill-switch HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{\"active\": true",  // cut short
        binary,
    };
    for (const auto& bytes : garbage) {
        const auto answer = raw_exchange(socket_, bytes);
        EXPECT_TRUE(answer.ends_with("<closed>")) << answer;
        EXPECT_FALSE(contains(answer, "HTTP/1.1 200")) << answer;
    }
    EXPECT_TRUE(contains(raw_exchange(socket_, garbage[1]), "400")) << "a bad version is answered";
    EXPECT_TRUE(contains(raw_exchange(socket_, garbage[6]), "431")) << "an oversized head is answered";
    // HTTP/1.0 and pipelined requests are still HTTP.
    const auto pipelined = raw_exchange(socket_,
                                        "GET /v1/kill-switch HTTP/1.1\r\nHost: x\r\n\r\n"
                                        "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(std::count(pipelined.begin(), pipelined.end(), '\n') > 10, true) << pipelined;
    EXPECT_NE(pipelined.find("HTTP/1.1 200"), pipelined.rfind("HTTP/1.1 200")) << pipelined;
    EXPECT_TRUE(contains(raw_exchange(socket_, "GET /v1/kill-switch HTTP/1.0\r\n\r\n"), "HTTP/1.0 200"));

    auto beast = client();
    const auto status = beast.get("/v1/status");
    EXPECT_EQ(status.status, 200) << status;
    EXPECT_EQ(status.doc()["kill_switch"]["active"], false) << status;
    EXPECT_TRUE(contains(daemon_->log(), "tameflared started"));
    EXPECT_FALSE(contains(daemon_->log(), "stopping"));
}

TEST_F(Api, ConnectionsOverTheLimitAreRefusedAndServingGoesOn) {
    // Plain descriptors: 256 clients with an io_context each would pass the
    // test's own descriptor limit.
    std::vector<UniqueFd> idle;
    for (int i = 0; i < 256; ++i) {
        idle.emplace_back(connect_to(socket_));
        ASSERT_TRUE(idle.back()) << "connection " << i;
    }
    // The server accepts in order; give it the time to take all 256.
    std::this_thread::sleep_for(500ms);
    const auto refused = raw_exchange(socket_, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(contains(refused, "503")) << refused;
    EXPECT_TRUE(contains(refused, "too many connections")) << refused;
    // The ones taken are served.
    const std::string request = "GET /v1/kill-switch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(::send(idle.front().get(), request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    EXPECT_TRUE(contains(read_all(idle.front().get()), "HTTP/1.1 200")) << "a connection within the limit";
    idle.clear();
    std::this_thread::sleep_for(500ms);
    auto beast = client();
    EXPECT_EQ(beast.get("/v1/status").status, 200);
}

TEST_F(Api, EventsReachViewersAsTheyHappenFilteredByRoleAndType) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    auto viewer = stream(kViewer, "/v1/events");
    auto typed = stream(kViewer, "/v1/events?types=approval.requested,approval.resolved");
    auto nobody = stream(kNobody, "/v1/events");
    for (auto* client : {viewer.get(), typed.get(), nobody.get()}) {
        ASSERT_TRUE(client->wait_for_stderr("status 200 text/event-stream")) << client->err();
        ASSERT_TRUE(client->wait_for_stderr(": connected")) << client->err();
    }
    auto beast = client();
    const auto on = beast.request(http::verb::put, "/v1/kill-switch", R"({"active": true, "scope": "gateway:one"})");
    ASSERT_EQ(on.status, 200) << on;
    ASSERT_TRUE(viewer->wait_for_stderr("event: kill_switch.changed")) << viewer->err();
    ASSERT_TRUE(viewer->wait_for_stderr("\n\n", viewer->err().find("event: kill_switch.changed"))) << viewer->err();
    const auto& text = viewer->err();
    const auto at = text.find("event: kill_switch.changed");
    EXPECT_TRUE(contains(text.substr(0, at), "id: ")) << text;
    const auto data_at = text.find("data: ", at);
    ASSERT_NE(data_at, std::string::npos) << text;
    const auto data = json::parse(text.substr(data_at + 6, text.find('\n', data_at) - data_at - 6));
    EXPECT_EQ(data["gateways"], json({"one"})) << data;
    EXPECT_TRUE(contains(data.value("actor", ""), "uid:0")) << data;

    // The others' streams are alive (the server answers the next change to them too) but saw nothing of it.
    std::this_thread::sleep_for(300ms);
    (void)typed->wait_for_stderr("kill_switch", 0, 200ms);
    (void)nobody->wait_for_stderr("kill_switch", 0, 200ms);
    EXPECT_FALSE(contains(typed->err(), "kill_switch")) << typed->err();
    EXPECT_FALSE(contains(nobody->err(), "kill_switch")) << nobody->err();
    EXPECT_EQ(beast.request(http::verb::put, "/v1/kill-switch", R"({"active": false})").status, 200);

    // A client that goes away is let go; the daemon serves on.
    viewer.reset();
    typed.reset();
    nobody.reset();
    EXPECT_EQ(beast.get("/v1/status").status, 200);
}

TEST_F(Api, AStreamClientThatDoesNotReadIsDropped) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    // It asks for events and never reads them.
    const auto slow = connect_to(socket_);
    ASSERT_TRUE(slow);
    const std::string request = "GET /v1/events?types=kill_switch.changed HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(slow.get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    auto reader = stream(kViewer, "/v1/events?types=kill_switch.changed");
    ASSERT_TRUE(reader->wait_for_stderr(": connected")) << reader->err();

    // Past what the socket buffers hold, 1000 more wait for it, and it is let go.
    auto beast = client();
    bool dropped = false;
    for (int i = 0; i < 20000 && !dropped; ++i) {
        const auto reply = beast.request(http::verb::put, "/v1/kill-switch",
                                         i % 2 == 0 ? R"({"active": true, "scope": "connector:x"})"
                                                    : R"({"active": false, "scope": "connector:x"})");
        ASSERT_EQ(reply.status, 200) << reply;
        if (i % 100 == 0) {
            dropped = contains(daemon_->log(), "event stream dropped");
            (void)reader->wait_for_stderr("\x01", 0, 5ms);  // drains its pipe, so that it keeps up
        }
    }
    ASSERT_TRUE(dropped || daemon_->wait_for_log("event stream dropped", 5s)) << daemon_->log();
    EXPECT_TRUE(read_all(slow.get()).ends_with("<closed>"));
    // A client that keeps up is still served.
    EXPECT_TRUE(reader->wait_for_stderr("event: kill_switch.changed")) << reader->err();
    EXPECT_EQ(beast.get("/v1/status").status, 200);
}

TEST_F(Api, HeldRequestIsListedThenApprovedOrDenied) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    const std::string listen = daemon_->explicit_listen();
    ASSERT_FALSE(listen.empty()) << daemon_->log();
    auto events = stream(kViewer, "/v1/events?types=approval.requested,approval.resolved");
    ASSERT_TRUE(events->wait_for_stderr(": connected")) << events->err();

    const auto wait_for_pending = [&]() -> json {
        for (int i = 0; i < 200; ++i) {
            const auto listed = curl(kViewer, "GET", "/v1/approvals").doc();
            if (listed.is_object() && !listed["approvals"].empty()) return listed["approvals"][0];
            std::this_thread::sleep_for(50ms);
        }
        return {};
    };

    // Approved: the agent gets the upstream's answer.
    auto approved =
        std::async(std::launch::async, [&] { return proxy_request(listen, http::verb::post, url("/merge")); });
    const auto pending = wait_for_pending();
    ASSERT_TRUE(pending.is_object()) << daemon_->log();
    EXPECT_EQ(pending["gateway"], "one") << pending;
    EXPECT_EQ(pending["action"], "http.post") << pending;
    const std::string id = pending["id"];
    const auto one = curl(kViewer, "GET", "/v1/approvals/" + id);
    EXPECT_EQ(one.status, 200) << one;
    EXPECT_EQ(one.doc()["id"], id) << one;
    ASSERT_TRUE(events->wait_for_stderr("event: approval.requested")) << events->err();

    const auto viewer_answer = curl(kViewer, "POST", "/v1/approvals/" + id + "/approve", "{}");
    EXPECT_EQ(viewer_answer.status, 403) << viewer_answer;
    EXPECT_TRUE(contains(viewer_answer.doc()["hint"], "4243")) << viewer_answer;
    EXPECT_EQ(upstream_.requests().size(), 0U) << "nothing went out before the approval";

    const auto answer = curl(kMember, "POST", "/v1/approvals/" + id + "/approve", R"({"note": "looks fine"})");
    ASSERT_EQ(answer.status, 200) << answer;
    EXPECT_EQ(answer.doc()["id"], id) << answer;
    EXPECT_EQ(answer.doc()["approved"], true) << answer;
    ASSERT_EQ(approved.wait_for(20s), std::future_status::ready);
    const auto got = approved.get();
    EXPECT_EQ(got.status, 200U) << got.body;
    EXPECT_EQ(got.upstream, "test") << got.body;
    EXPECT_TRUE(upstream_.wait_for_requests(1));
    ASSERT_TRUE(events->wait_for_stderr("event: approval.resolved")) << events->err();
    const auto again = curl(kMember, "POST", "/v1/approvals/" + id + "/deny");
    EXPECT_EQ(again.status, 409) << again;
    EXPECT_EQ(again.code(), "conflict") << again;

    // Denied: the agent gets 403 and the upstream nothing more.
    auto denied =
        std::async(std::launch::async, [&] { return proxy_request(listen, http::verb::post, url("/merge")); });
    const auto second = wait_for_pending();
    ASSERT_TRUE(second.is_object()) << daemon_->log();
    ASSERT_NE(second["id"], id);
    const auto no = curl(kMember, "POST", "/v1/approvals/" + second["id"].get<std::string>() + "/deny");
    ASSERT_EQ(no.status, 200) << no;
    EXPECT_EQ(no.doc()["approved"], false) << no;
    ASSERT_EQ(denied.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(denied.get().status, 403U);
    EXPECT_EQ(upstream_.requests().size(), 1U);
    EXPECT_EQ(curl(kViewer, "GET", "/v1/approvals").doc()["approvals"], json::array());

    const auto metrics = curl(kViewer, "GET", "/metrics");
    ASSERT_EQ(metrics.status, 200) << metrics;
    EXPECT_TRUE(metrics.content_type.starts_with("text/plain")) << metrics.content_type;
    EXPECT_TRUE(contains(metrics.body, "tameflare_requests_approved_total 1")) << metrics.body;
}

// SIGTERM (systemctl stop) drains: a request held for approval is denied with
// the reason before the connection closes, and nothing reaches the upstream.
TEST_F(Api, StoppingDeniesAHeldRequestWithTheReason) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    const std::string listen = daemon_->explicit_listen();
    ASSERT_FALSE(listen.empty()) << daemon_->log();
    auto held = std::async(std::launch::async, [&] { return proxy_request(listen, http::verb::post, url("/merge")); });
    bool pending = false;
    for (int i = 0; i < 200 && !pending; ++i) {
        const auto listed = curl(kViewer, "GET", "/v1/approvals").doc();
        pending = listed.is_object() && !listed["approvals"].empty();
        if (!pending) std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(pending) << daemon_->log();

    daemon_->process().signal(SIGTERM);
    ASSERT_EQ(held.wait_for(20s), std::future_status::ready);
    const auto got = held.get();
    EXPECT_EQ(got.status, 403U) << got.body;
    EXPECT_TRUE(contains(got.body, "tameflared is stopping")) << got.body;
    EXPECT_EQ(daemon_->process().wait(), 0) << daemon_->log();
    EXPECT_TRUE(contains(daemon_->log(), "1 held requests denied: tameflared is stopping")) << daemon_->log();
    EXPECT_EQ(upstream_.requests().size(), 0U);
}

TEST_F(Api, LogsAndMetricsAfterARequest) {
    const std::string listen = daemon_->explicit_listen();
    const auto got = proxy_request(listen, http::verb::get, url("/read/me"));
    ASSERT_EQ(got.status, 200U) << got.body;

    auto beast = client();
    // The proxy counts a request once its answer is sent: a moment after the client has it.
    Reply metrics;
    for (int i = 0; i < 100; ++i) {
        metrics = beast.get("/metrics");
        if (metrics.status != 200 || contains(metrics.body, "tameflare_requests_total{")) break;
        std::this_thread::sleep_for(50ms);
    }
    ASSERT_EQ(metrics.status, 200) << metrics;
    EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4");
    EXPECT_TRUE(contains(metrics.body, "tameflare_requests_total{")) << metrics.body;
    EXPECT_TRUE(contains(metrics.body, "gateway=\"one\"")) << metrics.body;

    // The traffic row may be committed a moment after the answer.
    json rows;
    for (int i = 0; i < 100; ++i) {
        rows = beast.get("/v1/traffic?gateway=one").doc();
        if (rows.is_object() && !rows["rows"].empty()) break;
        std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(rows.is_object()) << rows;
    ASSERT_EQ(rows["rows"].size(), 1U) << rows;
    EXPECT_EQ(rows["rows"][0]["path"], "/read/me") << rows;
    EXPECT_EQ(rows["rows"][0]["decision"], "allowed") << rows;
    EXPECT_EQ(beast.get("/v1/traffic?gateway=other").doc()["rows"], json::array());
    EXPECT_EQ(beast.get("/v1/traffic?since=1h&limit=1&decision=allowed").doc()["rows"].size(), 1U);
    EXPECT_EQ(beast.get("/v1/traffic?until=2000-01-01T00:00:00Z").doc()["rows"], json::array());

    const auto lines = beast.get("/v1/traffic?format=jsonl");
    EXPECT_EQ(lines.content_type, "application/x-ndjson");
    EXPECT_EQ(json::parse(lines.body.substr(0, lines.body.find('\n')))["path"], "/read/me") << lines;
    const auto csv = beast.get("/v1/traffic?format=csv");
    EXPECT_TRUE(csv.content_type.starts_with("text/csv")) << csv;
    EXPECT_TRUE(csv.body.starts_with("time,request_id,gateway,")) << csv;
    EXPECT_TRUE(contains(csv.body, "/read/me")) << csv;
    EXPECT_TRUE(contains(csv.body, "\r\n")) << csv;

    const auto audit = beast.get("/v1/audit?limit=5");
    ASSERT_EQ(audit.status, 200) << audit;
    EXPECT_FALSE(audit.doc()["records"].empty()) << audit;
    EXPECT_TRUE(audit.doc()["records"][0].contains("seq")) << audit;
    const auto verify = beast.get("/v1/audit/verify");
    ASSERT_EQ(verify.status, 200) << verify;
    EXPECT_EQ(verify.doc()["ok"], true) << verify;
}

TEST_F(Api, VaultSecretsAreSetListedAndRemovedWithoutTheirValues) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    const auto set =
        curl(kAdmin, "PUT", "/v1/vault/site-token", R"({"value": "s3cret-value-123", "connector": "site"})");
    ASSERT_EQ(set.status, 200) << set;
    EXPECT_EQ(set.doc()["name"], "site-token") << set;
    EXPECT_FALSE(contains(set.body, "s3cret-value-123")) << set;
    const auto listed = curl(kAdmin, "GET", "/v1/vault");
    ASSERT_EQ(listed.status, 200) << listed;
    EXPECT_EQ(listed.doc()["secrets"][0]["name"], "site-token") << listed;
    EXPECT_FALSE(contains(listed.body, "s3cret-value-123")) << listed;
    const auto rotated = curl(kAdmin, "POST", "/v1/vault/rotate");
    EXPECT_EQ(rotated.status, 200) << rotated;
    EXPECT_EQ(rotated.doc()["rotated"], 1) << rotated;
    const auto removed = curl(kAdmin, "DELETE", "/v1/vault/site-token");
    EXPECT_EQ(removed.status, 200) << removed;
    EXPECT_EQ(removed.doc()["removed"], true) << removed;
    EXPECT_EQ(curl(kAdmin, "DELETE", "/v1/vault/site-token").code(), "unknown_secret");
}

TEST_F(Api, ReloadAndConfigCheckReportTheConfiguration) {
    if (::geteuid() != 0) GTEST_SKIP() << "becoming other users with setpriv needs root";
    auto beast = client();
    const auto check = beast.request(http::verb::post, "/v1/config/check");
    ASSERT_EQ(check.status, 200) << check;
    EXPECT_EQ(check.doc()["valid"], true) << check;
    const auto reload = curl(kAdmin, "POST", "/v1/reload");
    ASSERT_EQ(reload.status, 200) << reload;
    EXPECT_EQ(reload.doc()["reloaded"], true) << reload;
    EXPECT_EQ(curl(kMember, "POST", "/v1/reload").status, 403);

    // A broken gateway file: check says why, reload refuses and the running configuration stays.
    write_gateway(R"([{"action": "http.post", "decision": "maybe"}])");
    const auto bad_check = beast.request(http::verb::post, "/v1/config/check");
    ASSERT_EQ(bad_check.status, 200) << bad_check;
    EXPECT_EQ(bad_check.doc()["valid"], false) << bad_check;
    ASSERT_FALSE(bad_check.doc()["errors"].empty()) << bad_check;
    EXPECT_TRUE(contains(bad_check.doc()["errors"][0].value("file", ""), "one.json")) << bad_check;
    const auto refused = beast.request(http::verb::post, "/v1/reload");
    EXPECT_EQ(refused.status, 400) << refused;
    EXPECT_EQ(refused.code(), "config_invalid") << refused;
    EXPECT_EQ(beast.get("/v1/gateways/one").status, 200);
}

}  // namespace
}  // namespace tameflare::testing
