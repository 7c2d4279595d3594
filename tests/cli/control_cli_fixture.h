// The fixture of tf's tests against a running daemon: a real tameflared
// (explicit proxy only, its REST socket in a temporary directory), the real tf
// run as a user runs it, and an upstream the proxy forwards to.
#pragma once

#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "tests/support/daemon_process.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_upstream.h"

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::testing {

namespace control_cli {

namespace fs = std::filesystem;
namespace net = boost::asio;
namespace http = boost::beast::http;
using net::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;

// "one:token" in base64; the gateway stores sha256("token").
constexpr const char* kProxyAuthorization = "Basic b25lOnRva2Vu";
constexpr const char* kTokenSha256 = "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0";
// A uid and gid with no role group and no other group.
constexpr const char* kNobody = "4250";

inline bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

inline std::vector<json> json_lines(const std::string& text) {
    std::vector<json> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty()) lines.push_back(json::parse(line));
    }
    return lines;
}

// One request through the daemon's explicit proxy, as gateway "one"; the
// status the proxy answered (0 when the connection failed).
inline unsigned proxy_request(const std::string& listen, http::verb method, const std::string& url) {
    try {
        net::io_context io;
        tcp::socket socket(io);
        const auto colon = listen.rfind(':');
        socket.connect(tcp::endpoint(net::ip::make_address(listen.substr(0, colon)),
                                     static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)))));
        http::request<http::string_body> request{method, url, 11};
        request.set(http::field::host, url.substr(7, url.find('/', 7) - 7));
        request.set(http::field::proxy_authorization, kProxyAuthorization);
        request.prepare_payload();
        http::write(socket, request);
        boost::beast::flat_buffer buffer;
        http::response<http::string_body> response;
        http::read(socket, buffer, response);
        return response.result_int();
    } catch (const std::exception&) {
        return 0;
    }
}

// Reads a running tf's output until `needle` shows on its stdout.
inline bool wait_for_stdout(Subprocess& process, const std::string& needle, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!contains(process.out(), needle)) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        // Pumps both pipes for a while; nothing on stderr is awaited.
        process.wait_for_stderr("\x01never\x01", 0, 100ms);
    }
    return true;
}

class ControlCli : public ::testing::Test {
protected:
    void SetUp() override {
        // Others may look in (the test without a role runs as another uid).
        fs::permissions(root_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
        fs::create_directories(root_ / "gateways.d");
        std::ofstream(root_ / "tameflared.json") << json{
            {"connector_dirs", {std::string(TF_SOURCE_DIR) + "/connectors"}},
            {"gateways_dir", "gateways.d"},
            {"state_dir", (root_ / "state").string()},
            {"runtime_dir", (root_ / "run").string()},
            {"agents", {{"enabled", false}}},
            {"proxy",
             {{"transparent_listen", "127.0.0.1:0"},
              {"explicit_listen", "127.0.0.1:0"},
              {"system_resolver", false},
              {"allowed_upstreams", {"127.0.0.1"}},
              {"hosts", {{"plain.test", {"127.0.0.1"}}}}}},
            {"api",
             {{"socket", (root_ / "api.sock").string()},
              {"socket_group", ""},
              {"socket_mode", "0666"},
              {"role_groups", {{"owner", "4241"}, {"admin", "4242"}, {"member", "4243"}, {"viewer", "4244"}}}}}};
        // PUT is held for a human, GET is allowed, DELETE denied.
        std::ofstream(root_ / "gateways.d" / "one.json")
            << json{{"name", "one"},
                    {"description", "the test's gateway"},
                    {"proxy_token_sha256", kTokenSha256},
                    {"rate_limit", {{"requests", 0}}},
                    {"approval_timeout_seconds", 120},
                    {"connectors",
                     {{"site",
                       {{"connector", "http"},
                        {"domains", {"plain.test"}},
                        {"preset", "read_only"},
                        {"rules", {{{"action", "http.put"}, {"decision", "require_approval"}}}}}}}}};
        std::ofstream(root_ / "gateways.d" / "two.json") << json{
            {"name", "two"},
            {"connectors", {{"site", {{"connector", "http"}, {"domains", {"other.test"}}, {"preset", "read_only"}}}}}};
        socket_ = (root_ / "api.sock").string();
        start();
    }
    // Stops the daemon (SIGTERM, exit 0) and starts it again on the same
    // configuration, socket and state; a new log file, a new proxy port.
    void restart() {
        stop();
        ++starts_;
        start();
    }
    void stop() {
        if (!daemon_) return;
        daemon_->process().signal(SIGTERM);
        EXPECT_EQ(daemon_->process().wait(), 0) << daemon_->log();
        daemon_.reset();
    }
    void start() {
        const auto log = starts_ == 0 ? std::string("daemon.log") : "daemon." + std::to_string(starts_) + ".log";
        daemon_ = std::make_unique<DaemonProcess>(TAMEFLARED_BINARY, config(), root_ / log);
        ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
        ASSERT_EQ(daemon_->field("API_SOCKET"), socket_) << daemon_->log();
        listen_ = daemon_->explicit_listen();
        ASSERT_FALSE(listen_.empty()) << daemon_->log();
    }

    void TearDown() override { stop(); }

    fs::path config() const { return root_ / "tameflared.json"; }
    std::string url(const std::string& path) const {
        return "http://plain.test:" + std::to_string(upstream_.port()) + path;
    }

    // tf with `args`, then --socket.
    Result tf(std::vector<std::string> args) const {
        args.insert(args.begin(), TF_BINARY);
        args.emplace_back("--socket");
        args.push_back(socket_);
        return run(args);
    }
    std::vector<std::string> tf_argv(std::vector<std::string> args) const {
        args.insert(args.begin(), TF_BINARY);
        args.emplace_back("--socket");
        args.push_back(socket_);
        return args;
    }

    // A PUT through the proxy, held until someone answers; its status later.
    std::future<unsigned> hold(const std::string& path) {
        return std::async(std::launch::async, [listen = listen_, target = url(path)] {
            return proxy_request(listen, http::verb::put, target);
        });
    }
    // The pending approvals, once there are `count`.
    json wait_for_approvals(std::size_t count) const {
        json approvals;
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto result = tf({"approvals", "list", "--json"});
            if (result.status != 0) return json::object({{"error", result.err}});
            approvals = json::parse(result.out)["approvals"];
            if (approvals.size() >= count) return approvals;
            std::this_thread::sleep_for(50ms);
        }
        return approvals;
    }

    TempDir temp_{"tf-control-cli"};
    const fs::path root_ = temp_.path();
    TestUpstream upstream_;
    std::unique_ptr<DaemonProcess> daemon_;
    std::string socket_;
    std::string listen_;
    int starts_ = 0;  // restarts so far: names the log file
};

}  // namespace control_cli

using control_cli::ControlCli;

}  // namespace tameflare::testing
