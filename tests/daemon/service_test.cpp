// tameflared as a systemd service, held to the protocols systemd speaks,
// without systemd: the sd_notify datagrams (READY=1 only once it serves,
// STATUS=, WATCHDOG=1 while its event loops answer, RELOADING=1 and
// STOPPING=1) on a NOTIFY_SOCKET the test binds, and socket activation of
// the REST socket by systemd-socket-activate (the tool systemd ships for it).
#include "tests/support/daemon_process.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A unix datagram socket at `path`, as systemd's notification socket is.
class NotifySocket {
public:
    explicit NotifySocket(const fs::path& path) : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
            throw std::runtime_error("cannot bind " + path.string() + ": " + std::strerror(errno));
        }
    }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    ~NotifySocket() { ::close(fd_); }

    // The next datagram, or nullopt after `timeout`.
    std::optional<std::string> next(std::chrono::milliseconds timeout) const {
        pollfd ready{fd_, POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
        std::array<char, 4096> buffer{};
        const auto size = ::recv(fd_, buffer.data(), buffer.size(), 0);
        if (size < 0) return std::nullopt;
        return std::string(buffer.data(), static_cast<std::size_t>(size));
    }

    // Datagrams until one contains `needle` (returned), all kept in `seen`.
    std::optional<std::string> until(const std::string& needle, std::vector<std::string>& seen,
                                     std::chrono::milliseconds timeout = 20s) const {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            auto message = next(std::max(left, 1ms));
            if (!message) continue;
            seen.push_back(*message);
            if (message->find(needle) != std::string::npos) return message;
        }
        return std::nullopt;
    }

private:
    int fd_;
};

bool connects(const fs::path& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return ok;
}

class Service : public ::testing::Test {
protected:
    void SetUp() override {
        fs::create_directories(root() / "gateways.d");
        std::ofstream(root() / "gateways.d" / "one.json")
            << R"({"name": "one", "connectors": {"site": {"connector": "http", "domains": ["plain.test"]}}})";
    }
    void write_config(const std::string& api) const {
        std::ofstream(config()) << R"({"connector_dirs": [")" << TF_SOURCE_DIR
                                << R"(/connectors"], "gateways_dir": "gateways.d", "state_dir": "state",
                  "runtime_dir": "run", "agents": {"enabled": false}, "dbus": {"enabled": false},
                  "api": )" << api
                                << R"(, "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false}})";
    }
    [[nodiscard]] fs::path root() const { return temp_.path(); }
    [[nodiscard]] fs::path config() const { return root() / "tameflared.json"; }

    TempDir temp_{"tf-service"};
};

TEST_F(Service, NotifiesReadyOnlyOnceItServesThenFeedsTheWatchdogAndSaysWhenItReloadsAndStops) {
    write_config(R"({"socket": ")" + (root() / "api.sock").string() + R"("})");
    const NotifySocket notify(root() / "notify.sock");
    // A 600 ms watchdog: tameflared feeds it every 200 ms while its loops answer.
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root() / "daemon.log",
                         {"NOTIFY_SOCKET=" + (root() / "notify.sock").string(), "WATCHDOG_USEC=600000"});
    std::vector<std::string> seen;
    const auto ready = notify.until("READY=1", seen);
    ASSERT_TRUE(ready) << daemon.log();
    // Nothing said ready before it was: by the time READY=1 is read, the API
    // socket and the proxy listener are open.
    EXPECT_EQ(seen.size(), 1U) << seen.front();
    EXPECT_TRUE(connects(root() / "api.sock"));
    EXPECT_NE(daemon.log().find("tameflared started"), std::string::npos) << daemon.log();
    EXPECT_NE(ready->find("STATUS=1 gateways, 0 agents"), std::string::npos) << *ready;
    EXPECT_NE(ready->find("kernel enforcement off"), std::string::npos) << *ready;

    // The watchdog is fed, again and again (at least three times in 3 s: one
    // period is 600 ms).
    int feeds = 0;
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (feeds < 3 && std::chrono::steady_clock::now() < deadline) {
        const auto message = notify.next(100ms);
        if (message && message->find("WATCHDOG=1") != std::string::npos) ++feeds;
    }
    EXPECT_GE(feeds, 3);

    daemon.process().signal(SIGHUP);
    seen.clear();
    ASSERT_TRUE(notify.until("RELOADING=1", seen)) << daemon.log();
    ASSERT_TRUE(notify.until("READY=1", seen)) << daemon.log();

    daemon.process().signal(SIGTERM);
    seen.clear();
    const auto stopping = notify.until("STOPPING=1", seen);
    ASSERT_TRUE(stopping) << daemon.log();
    EXPECT_NE(stopping->find("STATUS=stopping"), std::string::npos) << *stopping;
    EXPECT_EQ(daemon.process().wait(), 0) << daemon.log();
    EXPECT_FALSE(fs::exists(root() / "api.sock")) << "the daemon removes the socket it made";
}

TEST_F(Service, WithoutNotifySocketItRunsAsAPlainForegroundDaemon) {
    write_config(R"({"socket": ")" + (root() / "api.sock").string() + R"("})");
    DaemonProcess daemon(TAMEFLARED_BINARY, config(), root() / "daemon.log");
    ASSERT_TRUE(daemon.wait_for_log("tameflared started")) << daemon.log();
    // Plain lines on stderr: "notice: message KEY=value", no journal fields.
    EXPECT_NE(daemon.log().find("notice: tameflared started"), std::string::npos) << daemon.log();
    EXPECT_EQ(daemon.log().find("MESSAGE_ID"), std::string::npos) << daemon.log();
    daemon.process().signal(SIGTERM);
    EXPECT_EQ(daemon.process().wait(), 0) << daemon.log();
}

// tameflared-api.socket: systemd binds /run/tameflare/api.sock and passes it
// (LISTEN_FDS); the daemon serves on it and leaves it in place when it stops,
// so clients of a restarting daemon wait instead of failing.
TEST_F(Service, ServesTheRestSocketSystemdHandsItAndLeavesItToSystemd) {
    const fs::path socket = root() / "activated.sock";
    // The configured path is not the one systemd holds: the passed socket wins.
    write_config(R"({"socket": ")" + (root() / "configured.sock").string() + R"("})");
    Subprocess daemon({"/bin/sh", "-c", R"(exec systemd-socket-activate -l "$0" "$1" -c "$2" 2>>"$3")", socket.string(),
                       TAMEFLARED_BINARY, config().string(), (root() / "daemon.log").string()});
    // As systemd does, it starts the daemon when the first client connects:
    // that client waits in the socket's backlog and is then served.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!fs::exists(socket) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    const auto curl = run({"/usr/bin/curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                           "--unix-socket", socket.string(), "http://tameflared/v1/status"});
    EXPECT_EQ(curl.out, "200") << curl.err;
    EXPECT_EQ(curl.status, 0);
    // The REST server starts before the daemon logs that it started: a
    // client in the backlog can have its answer before the line is written.
    ASSERT_TRUE(wait_for_text(root() / "daemon.log", "tameflared started")) << slurp(root() / "daemon.log");
    const auto log = slurp(root() / "daemon.log");
    EXPECT_NE(log.find("API_SOCKET=" + socket.string()), std::string::npos) << log;
    EXPECT_FALSE(fs::exists(root() / "configured.sock"));

    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait(), 0) << slurp(root() / "daemon.log");
    EXPECT_TRUE(fs::exists(socket)) << "the socket is systemd's: the daemon must not remove it";
}

}  // namespace
}  // namespace tameflare::testing
