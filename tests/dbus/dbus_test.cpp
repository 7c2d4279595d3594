// com.tameflare.Daemon1 of a real tameflared on a private system-like bus.
// The bus is a real dbus-daemon whose configuration includes the SHIPPED
// dbus/com.tameflare.Daemon1.conf; it runs in its own mount namespace with
// an /etc/group that has the tameflare-* groups (gids 4241..4244, the role
// groups the daemon is configured with) and an /etc/passwd with the test
// users, so the shipped policy is tested as it is written. Clients are busctl and dbus-send run as other users with
// setpriv, and an sd-bus connection in this process (root, so owner).
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "bpf/enforcer.h"
#include "common/unique_fd.h"
#include "netns/cgroup.h"
#include "tests/support/daemon_process.h"
#include "tests/support/run_as.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_upstream.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
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
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kName = "com.tameflare.Daemon1";
constexpr const char* kPath = "/com/tameflare/Daemon1";
constexpr const char* kInterface = "com.tameflare.Daemon1";

// "one:token" in base64; the gateway stores sha256("token").
constexpr const char* kProxyAuthorization = "Basic b25lOnRva2Vu";
constexpr const char* kTokenSha256 = "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0";

// Users with no entry in /etc/passwd, each given one role's group by gid.
constexpr Identity kOwner{4201, "4241"};
constexpr Identity kAdmin{4202, "4242"};
constexpr Identity kMember{4203, "4243"};
constexpr Identity kViewer{4204, "4244"};
constexpr Identity kNobody{4250, ""};

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

std::string missing_tools() {
    for (const char* tool :
         {"/usr/bin/dbus-daemon", "/usr/bin/busctl", "/usr/bin/dbus-send", "/usr/bin/setpriv", "/usr/bin/unshare"}) {
        if (::access(tool, X_OK) != 0) return std::string(tool) + " is not installed";
    }
    if (::geteuid() != 0) return "the D-Bus tests run as root (setpriv, a mount namespace for the bus's /etc/group)";
    return {};
}

std::string object_path(const char* prefix, const std::string& label) {
    char* raw = nullptr;
    if (sd_bus_path_encode(prefix, label.c_str(), &raw) < 0) return {};
    std::string path(raw);
    std::free(raw);
    return path;
}

// ---------------------------------------------------------------------------
// A private bus with the shipped policy.

class PrivateBus {
public:
    explicit PrivateBus(const fs::path& dir) : socket_(dir / "bus.sock") {
        // The host's users and groups, less any tameflare-* group it has,
        // plus the test users (dbus-daemon refuses a uid it cannot look up)
        // as members of the role groups.
        std::ifstream host_group("/etc/group");
        std::ofstream group(dir / "group");
        std::string line;
        while (std::getline(host_group, line)) {
            if (!line.starts_with("tameflare-")) group << line << "\n";
        }
        group << "tameflare-owner:x:4241:tf-dbus-owner\ntameflare-admin:x:4242:tf-dbus-admin\n"
                 "tameflare-member:x:4243:tf-dbus-member\ntameflare-viewer:x:4244:tf-dbus-viewer\n";
        group.close();
        std::ifstream host_passwd("/etc/passwd");
        std::ofstream passwd(dir / "passwd");
        while (std::getline(host_passwd, line)) passwd << line << "\n";
        for (const auto& [name, who] :
             {std::pair{"owner", kOwner}, std::pair{"admin", kAdmin}, std::pair{"member", kMember},
              std::pair{"viewer", kViewer}, std::pair{"nobody", kNobody}}) {
            passwd << "tf-dbus-" << name << ":x:" << who.uid << ":" << who.uid << "::/nonexistent:/usr/sbin/nologin\n";
        }
        passwd.close();
        ::chmod((dir / "group").c_str(), 0644);
        ::chmod((dir / "passwd").c_str(), 0644);
        // The system bus's own defaults (Debian's system.conf), then the shipped file.
        std::ofstream(dir / "bus.conf")
            << R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)"
            << socket_.string() << R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>)"
            << TF_SOURCE_DIR << R"(/dbus/com.tameflare.Daemon1.conf</include>
</busconfig>
)";
        process_ = std::make_unique<Subprocess>(
            std::vector<std::string>{"/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                                     R"(mount --bind "$0" /etc/group && mount --bind "$1" /etc/passwd &&
               exec /usr/bin/dbus-daemon --nofork --print-address=2 --config-file="$2")",
                                     (dir / "group").string(), (dir / "passwd").string(), (dir / "bus.conf").string()});
    }

    bool ready() { return process_->wait_for_stderr("unix:"); }
    [[nodiscard]] std::string address() const { return "unix:path=" + socket_.string(); }
    [[nodiscard]] const std::string& log() const { return process_->err(); }

private:
    fs::path socket_;
    std::unique_ptr<Subprocess> process_;
};

// ---------------------------------------------------------------------------
// An sd-bus client in this process (root).

struct MessageUnref {
    void operator()(sd_bus_message* message) const { sd_bus_message_unref(message); }
};
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;

struct Reply {
    std::string error;  // the D-Bus error name; "" on success
    std::string message;
    MessagePtr reply;
    [[nodiscard]] bool ok() const { return error.empty(); }
    // The first argument, a string.
    [[nodiscard]] std::string text() const {
        const char* value = nullptr;
        if (!reply || sd_bus_message_rewind(reply.get(), 1) < 0 || sd_bus_message_read(reply.get(), "s", &value) <= 0) {
            return {};
        }
        return value;
    }
    [[nodiscard]] json doc() const { return json::parse(text(), nullptr, false); }
};

std::ostream& operator<<(std::ostream& out, const Reply& reply) {
    return out << (reply.ok() ? "ok" : reply.error + ": " + reply.message);
}

class BusClient {
public:
    explicit BusClient(const std::string& address) {
        sd_bus* raw = nullptr;
        int r = sd_bus_new(&raw);
        bus_.reset(raw);
        if (r >= 0) r = sd_bus_set_address(bus_.get(), address.c_str());
        if (r >= 0) r = sd_bus_set_bus_client(bus_.get(), 1);
        if (r >= 0) r = sd_bus_negotiate_fds(bus_.get(), 1);
        if (r >= 0) r = sd_bus_start(bus_.get());
        if (r < 0) throw std::runtime_error("cannot connect to " + address + ": " + std::strerror(-r));
    }

    Reply call(const std::string& path, const char* interface, const char* member, const char* types, ...) {
        va_list args;
        va_start(args, types);
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message* reply = nullptr;
        const int r =
            sd_bus_call_methodv(bus_.get(), kName, path.c_str(), interface, member, &error, &reply, types, args);
        va_end(args);
        Reply out;
        out.reply.reset(reply);
        if (r < 0) {
            out.error = error.name != nullptr ? error.name : "errno";
            out.message = error.message != nullptr ? error.message : std::strerror(-r);
        }
        sd_bus_error_free(&error);
        return out;
    }

    // Records every signal `member` of `interface` (any member when null).
    void watch(const char* interface, const char* member) {
        sd_bus_slot* slot = nullptr;
        const int r = sd_bus_match_signal(
            bus_.get(), &slot, nullptr, nullptr, interface, member,
            [](sd_bus_message* message, void* userdata, sd_bus_error*) {
                static_cast<BusClient*>(userdata)->signals_.emplace_back(sd_bus_message_ref(message));
                return 0;
            },
            this);
        if (r < 0) throw std::runtime_error(std::string("match failed: ") + std::strerror(-r));
        slots_.emplace_back(slot);
    }

    // Processes the bus until `done` or the timeout.
    bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 20s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (true) {
            while (sd_bus_process(bus_.get(), nullptr) > 0) {
            }
            if (done()) return true;
            if (std::chrono::steady_clock::now() >= deadline) return false;
            sd_bus_wait(bus_.get(), 50000);
        }
    }

    // The signals seen named `member`.
    std::vector<sd_bus_message*> seen(const std::string& member) const {
        std::vector<sd_bus_message*> out;
        for (const auto& message : signals_) {
            if (member == sd_bus_message_get_member(message.get())) out.push_back(message.get());
        }
        return out;
    }

private:
    struct BusUnref {
        void operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }
    };
    struct SlotUnref {
        void operator()(sd_bus_slot* slot) const { sd_bus_slot_unref(slot); }
    };
    std::unique_ptr<sd_bus, BusUnref> bus_;
    std::vector<std::unique_ptr<sd_bus_slot, SlotUnref>> slots_;
    std::vector<MessagePtr> signals_;
};

// PropertiesChanged's changed KillSwitch value, if the signal has one.
std::optional<bool> changed_kill_switch(sd_bus_message* message) {
    const char* interface = nullptr;
    if (sd_bus_message_rewind(message, 1) < 0 || sd_bus_message_read(message, "s", &interface) < 0) return {};
    if (sd_bus_message_enter_container(message, 'a', "{sv}") < 0) return {};
    std::optional<bool> found;
    while (sd_bus_message_enter_container(message, 'e', "sv") > 0) {
        const char* name = nullptr;
        sd_bus_message_read(message, "s", &name);
        if (std::string(name) == "KillSwitch") {
            int value = 0;
            sd_bus_message_read(message, "v", "b", &value);
            found = value != 0;
        } else {
            sd_bus_message_skip(message, "v");
        }
        sd_bus_message_exit_container(message);
    }
    return found;
}

// What a held request through the explicit proxy got.
struct ProxyReply {
    unsigned status = 0;
    std::string upstream;
};

ProxyReply proxy_request(const std::string& listen, const std::string& url) {
    net::io_context io;
    net::ip::tcp::socket socket(io);
    const auto colon = listen.rfind(':');
    socket.connect({net::ip::make_address(listen.substr(0, colon)),
                    static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)))});
    http::request<http::string_body> request{http::verb::post, url, 11};
    request.set(http::field::host, url.substr(7, url.find('/', 7) - 7));
    request.set(http::field::proxy_authorization, kProxyAuthorization);
    request.set(http::field::content_type, "application/json");
    request.body() = R"({"merge": true})";
    request.prepare_payload();
    http::write(socket, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    return {response.result_int(), std::string(response["X-Upstream"])};
}

// ---------------------------------------------------------------------------
// The interface's contract, dbus/com.tameflare.Daemon1.xml, against what the
// vtables export, compared by tests/dbus/compare_introspection.py (a real
// XML parser: Python's xml.etree).

constexpr const char* kContract = TF_SOURCE_DIR "/dbus/com.tameflare.Daemon1.xml";
constexpr const char* kCompareScript = TF_SOURCE_DIR "/tests/dbus/compare_introspection.py";

std::string missing_python() {
    return ::access("/usr/bin/python3", X_OK) == 0 ? std::string() : "/usr/bin/python3 is not installed";
}

std::string read_text(const fs::path& file) {
    std::ifstream in(file);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// Writes what the object at `path` introspects as to `file`; "" or why not.
std::string introspect_to(const std::string& address, const std::string& path, const fs::path& file) {
    const auto xml =
        run({"/usr/bin/busctl", "--address=" + address, "--no-pager", "introspect", "--xml-interface", kName, path});
    if (xml.status != 0 || xml.out.empty()) return "busctl introspect " + path + " failed: " + xml.err;
    std::ofstream(file) << xml.out;
    return {};
}

// The script's verdict (exit 0: all match; 1: the differences on stdout) on
// `contract` and the introspected `live` files; `unchecked` names the
// contract's interfaces no object of which could be made.
Result compare_with_contract(const std::string& contract, const std::vector<fs::path>& live,
                             const std::vector<std::string>& unchecked) {
    std::vector<std::string> argv{"/usr/bin/python3", kCompareScript, contract};
    for (const auto& file : live) argv.push_back(file.string());
    for (const auto& interface : unchecked) {
        argv.emplace_back("--unchecked");
        argv.push_back(interface);
    }
    return run(argv);
}

// ---------------------------------------------------------------------------
// A connection whose process changed: the pid race of D-Bus callers.

// A bus connection that outlives the process that opened it. dbus-python
// (/usr/bin/python3) connects, makes one read call, forks and exits; the
// fork keeps the connection and, once told to, makes one call that changes
// state and one that reads, and writes what it got as JSON.
constexpr const char* kOrphanScript = R"(
import dbus, json, os, sys, time
address, go, out = sys.argv[1:4]
bus = dbus.bus.BusConnection(address)
def daemon():
    proxy = bus.get_object("com.tameflare.Daemon1", "/com/tameflare/Daemon1", introspect=False)
    return dbus.Interface(proxy, "com.tameflare.Daemon1")
def attempt(call):
    try:
        return {"ok": str(call())}
    except dbus.DBusException as error:
        return {"error": error.get_dbus_name(), "message": error.get_dbus_message()}
opened = {"name": bus.get_unique_name(), "opener": os.getpid(), "before": attempt(lambda: daemon().GetStatus())}
print(json.dumps(opened), flush=True)
if os.fork() != 0:
    os._exit(0)  # the process that opened the connection goes away
null = os.open("/dev/null", os.O_RDWR)
os.dup2(null, 1)
os.dup2(null, 2)
deadline = time.time() + 60
while not os.path.exists(go):
    if time.time() > deadline:
        os._exit(3)
    time.sleep(0.01)
got = {"survivor": os.getpid(),
       "change": attempt(lambda: daemon().SetKillSwitch(True, "all", "from a connection whose pid changed hands")),
       "read": attempt(lambda: daemon().GetStatus())}
with open(out + ".tmp", "w") as file:
    file.write(json.dumps(got))
os.rename(out + ".tmp", out)
)";

std::string missing_python_dbus() {
    if (::access("/usr/bin/python3", X_OK) != 0) return "/usr/bin/python3 is not installed";
    Subprocess probe({"/usr/bin/python3", "-c", "import dbus"});
    if (probe.wait() != 0) return "dbus-python is not installed (Debian: python3-dbus): " + probe.err();
    return {};
}

class OrphanedConnection {
public:
    OrphanedConnection(const fs::path& dir, const std::string& address)
        : go_(dir / "orphan.go"), out_(dir / "orphan.json") {
        std::ofstream(dir / "orphan.py") << kOrphanScript;
        Subprocess opener({"/usr/bin/python3", (dir / "orphan.py").string(), address, go_.string(), out_.string()});
        // Reaped here: from now on its pid is free for another process.
        status_ = opener.wait();
        opened_ = json::parse(opener.out(), nullptr, false);
        error_ = opener.err();
    }
    [[nodiscard]] bool ok() const { return status_ == 0 && opened_.is_object(); }
    [[nodiscard]] std::string why() const { return "status " + std::to_string(status_) + ": " + error_; }
    [[nodiscard]] const json& opened() const { return opened_; }
    [[nodiscard]] pid_t opener() const { return opened_.value("opener", 0); }
    // Tells the fork to call; what it got.
    json calls() const {
        std::ofstream(go_.string()) << "go\n";
        for (int i = 0; i < 600 && !fs::exists(out_); ++i) std::this_thread::sleep_for(50ms);
        std::ifstream in(out_);
        return json::parse(in, nullptr, false);
    }

private:
    fs::path go_;
    fs::path out_;
    int status_ = -1;
    json opened_;
    std::string error_;
};

// A process that gets exactly pid `pid` (clone3 with set_tid, root), as a
// recycled pid would: the impostor the daemon must not take for the caller.
class PidImpostor {
public:
    explicit PidImpostor(pid_t pid) {
        // struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1).
        struct {
            std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
                set_tid_size;
        } args{};
        pid_t wanted = pid;
        args.exit_signal = SIGCHLD;
        args.set_tid = reinterpret_cast<std::uintptr_t>(&wanted);
        args.set_tid_size = 1;
        // Built before the clone: the child of a threaded process only execs.
        char program[] = "/bin/sleep";
        char seconds[] = "120";
        char* argv[] = {program, seconds, nullptr};
        char* envp[] = {nullptr};
        const long r = ::syscall(SYS_clone3, &args, sizeof args);
        if (r == 0) {
            ::execve(program, argv, envp);
            ::_exit(127);
        }
        if (r < 0) {
            error_ = std::strerror(errno);
        } else {
            pid_ = static_cast<pid_t>(r);
        }
    }
    PidImpostor(const PidImpostor&) = delete;
    PidImpostor& operator=(const PidImpostor&) = delete;
    ~PidImpostor() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    [[nodiscard]] bool ok() const { return pid_ > 0; }
    [[nodiscard]] const std::string& error() const { return error_; }

private:
    pid_t pid_ = -1;
    std::string error_;
};

// ---------------------------------------------------------------------------

class Dbus : public ::testing::Test {
protected:
    void SetUp() override {
        if (const auto reason = missing_tools(); !reason.empty()) GTEST_SKIP() << reason;
        // The users the tests become must reach the bus socket.
        fs::permissions(root_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
        bus_ = std::make_unique<PrivateBus>(root_);
        ASSERT_TRUE(bus_->ready()) << bus_->log();
        fs::create_directories(root_ / "gateways.d");
        std::ofstream(root_ / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run", "agents": {"enabled": false},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false, "allowed_upstreams": ["127.0.0.1"],
                            "hosts": {"plain.test": ["127.0.0.1"]}},
                  "api": {"socket": ")"
            << (root_ / "api.sock").string() << R"(", "socket_group": "",
                          "role_groups": {"owner": "4241", "admin": "4242", "member": "4243", "viewer": "4244"}},
                  "dbus": {"enabled": true, "bus": "system"}})";
        std::ofstream(root_ / "gateways.d" / "one.json")
            << R"({"name": "one", "description": "the test gateway", "proxy_token_sha256": ")" << kTokenSha256
            << R"(", "rate_limit": {"requests": 0}, "approval_timeout_seconds": 60,
                  "connectors": {"site": {"connector": "http", "domains": ["plain.test"], "preset": "read_only",
                                          "rules": [{"action": "http.post", "decision": "require_approval"}]}}})";
        ASSERT_NO_FATAL_FAILURE(start_daemon("daemon.log"));
        client_ = std::make_unique<BusClient>(bus_->address());
    }

    void start_daemon(const std::string& log) {
        daemon_ =
            std::make_unique<DaemonProcess>(TAMEFLARED_BINARY, root_ / "tameflared.json", root_ / log,
                                            std::vector<std::string>{"DBUS_SYSTEM_BUS_ADDRESS=" + bus_->address()});
        ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
        ASSERT_TRUE(daemon_->field("DBUS").starts_with(":")) << daemon_->log() << bus_->log();
    }

    // How this daemon identifies callers ("bus-pidfd" or "tracked"), said
    // in the test's output so the reader knows which path the bus exercised.
    std::string caller_identity() {
        if (!daemon_->wait_for_log("DBUS_CALLER_IDENTITY=")) return {};
        std::string identity = daemon_->field("DBUS_CALLER_IDENTITY");
        std::cout << "[ IDENTITY ] tameflared identifies D-Bus callers by "
                  << (identity == "bus-pidfd" ? "the pidfd the bus gives (ProcessFD)"
                                              : "pidfds it opens as connections appear (this bus gives no ProcessFD)")
                  << ": DBUS_CALLER_IDENTITY=" << identity << std::endl;
        RecordProperty("dbus_caller_identity", identity);
        return identity;
    }

    void TearDown() override {
        if (daemon_) {
            daemon_->process().signal(SIGTERM);
            EXPECT_EQ(daemon_->process().wait(), 0) << daemon_->log();
        }
    }

    // busctl as `who` (nullopt: root), JSON output.
    Result busctl(const std::optional<Identity>& who, std::vector<std::string> args) const {
        std::vector<std::string> argv{"/usr/bin/busctl", "--address=" + bus_->address(), "--no-pager", "--json=short"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(who ? as(*who, argv) : argv);
    }
    // busctl call on the main object; the JSON of the first argument of the reply.
    Result call(const std::optional<Identity>& who, const std::string& member, std::vector<std::string> args = {},
                const std::string& path = kPath, const std::string& interface = kInterface) const {
        std::vector<std::string> argv{"call", kName, path, interface, member};
        argv.insert(argv.end(), args.begin(), args.end());
        return busctl(who, argv);
    }
    static json data(const Result& result) {
        const auto parsed = json::parse(result.out, nullptr, false);
        return parsed.is_object() ? parsed["data"] : json();
    }
    // The document a method that answers JSON text gave.
    static json document(const Result& result) {
        const auto value = data(result);
        if (!value.is_array() || value.empty() || !value[0].is_string()) return {};
        return json::parse(value[0].get<std::string>(), nullptr, false);
    }
    Result property(const std::optional<Identity>& who, const std::string& name, const std::string& path = kPath,
                    const std::string& interface = kInterface) const {
        return busctl(who, {"get-property", kName, path, interface, name});
    }
    // dbus-send as `who`: its stderr names the error ("Error com.tameflare...: ...").
    Result send(const Identity& who, const std::string& method, std::vector<std::string> args,
                const std::string& path = kPath) const {
        std::vector<std::string> argv{"/usr/bin/dbus-send",
                                      "--bus=" + bus_->address(),
                                      "--print-reply",
                                      std::string("--dest=") + kName,
                                      path,
                                      method};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(as(who, argv));
    }
    std::vector<std::string> tree() const {
        const auto result =
            run({"/usr/bin/busctl", "--address=" + bus_->address(), "--no-pager", "tree", "--list", kName});
        std::vector<std::string> paths;
        std::istringstream lines(result.out);
        std::string line;
        while (std::getline(lines, line)) {
            if (!line.empty()) paths.push_back(line);
        }
        return paths;
    }
    std::string url(const std::string& path) const {
        return "http://plain.test:" + std::to_string(upstream_.port()) + path;
    }
    // The first pending approval, as root sees it over D-Bus.
    json wait_for_pending() {
        for (int i = 0; i < 200; ++i) {
            const auto listed = client_->call(kPath, kInterface, "ListApprovals", "");
            const char* id = nullptr;
            if (listed.ok() && sd_bus_message_enter_container(listed.reply.get(), 'a', "(sssssst)") > 0) {
                const char* gateway = nullptr;
                const char* agent = nullptr;
                const char* action = nullptr;
                const char* risk = nullptr;
                const char* parameters = nullptr;
                std::uint64_t age = 0;
                if (sd_bus_message_read(listed.reply.get(), "(sssssst)", &id, &gateway, &agent, &action, &risk,
                                        &parameters, &age) > 0) {
                    return {{"id", id},     {"gateway", gateway},       {"agent", agent}, {"action", action},
                            {"risk", risk}, {"parameters", parameters}, {"age", age}};
                }
            }
            std::this_thread::sleep_for(50ms);
        }
        return {};
    }

    TempDir temp_{"tf-dbus"};
    const fs::path root_ = temp_.path();
    TestUpstream upstream_;
    std::unique_ptr<PrivateBus> bus_;
    std::unique_ptr<DaemonProcess> daemon_;
    std::unique_ptr<BusClient> client_;
};

TEST_F(Dbus, IntrospectionShowsTheInterfacesWithArgumentNames) {
    const auto xml = run({"/usr/bin/busctl", "--address=" + bus_->address(), "--no-pager", "introspect",
                          "--xml-interface", kName, kPath});
    ASSERT_EQ(xml.status, 0) << xml.err;
    for (const char* needle : {
             R"(<interface name="com.tameflare.Daemon1">)",
             R"(<method name="Approve">)",
             R"(<arg type="s" name="note" direction="in"/>)",
             R"(<arg type="s" name="status_json" direction="out"/>)",
             R"(<arg type="h" name="cwd" direction="in"/>)",
             R"x(<arg type="a(sssssst)" name="approvals" direction="out"/>)x",
             R"(<signal name="ApprovalRequested">)",
             R"(<arg type="s" name="parameters_json"/>)",
             R"(<signal name="AgentExited">)",
             R"(<property name="KillSwitchScope" type="as" access="read">)",
             R"(<property name="Version" type="s" access="read">)",
             R"(<interface name="org.freedesktop.DBus.ObjectManager">)",
             R"(<node name="gateway"/>)",
         }) {
        EXPECT_TRUE(contains(xml.out, needle)) << needle << "\n" << xml.out;
    }
    // A user with no role may introspect (the bus policy lets it), and sees the same.
    const auto nobody = busctl(kNobody, {"introspect", "--xml-interface", kName, kPath});
    ASSERT_EQ(nobody.status, 0) << nobody.err << bus_->log();
    EXPECT_TRUE(contains(nobody.out, R"(<method name="SetKillSwitch">)")) << nobody.out;
    // The gateway objects, with their interface.
    const std::string gateway = object_path("/com/tameflare/Daemon1/gateway", "one");
    const auto paths = tree();
    EXPECT_NE(std::find(paths.begin(), paths.end(), gateway), paths.end()) << ::testing::PrintToString(paths);
    const auto sub = run({"/usr/bin/busctl", "--address=" + bus_->address(), "--no-pager", "introspect",
                          "--xml-interface", kName, gateway});
    EXPECT_TRUE(contains(sub.out, R"(<interface name="com.tameflare.Daemon1.Gateway">)")) << sub.out;
    EXPECT_TRUE(contains(sub.out, R"(<arg type="s" name="level" direction="in"/>)")) << sub.out;
}

TEST_F(Dbus, TheIntrospectionMatchesTheXmlContract) {
    if (const auto reason = missing_python(); !reason.empty()) GTEST_SKIP() << reason;
    // An approval object exists while a request is held.
    const std::string listen = daemon_->field("EXPLICIT_LISTEN");
    ASSERT_FALSE(listen.empty()) << daemon_->log();
    auto held = std::async(std::launch::async, [&] { return proxy_request(listen, url("/merge")); });
    const auto pending = wait_for_pending();
    ASSERT_TRUE(pending.is_object()) << daemon_->log();
    const std::string id = pending["id"];

    // The main object, a gateway and the approval; agents are off in this
    // daemon (DbusLaunch checks the agent object).
    const std::vector<std::pair<std::string, fs::path>> objects{
        {kPath, root_ / "main.xml"},
        {object_path("/com/tameflare/Daemon1/gateway", "one"), root_ / "gateway.xml"},
        {object_path("/com/tameflare/Daemon1/approval", id), root_ / "approval.xml"},
    };
    std::vector<fs::path> live;
    std::string failed;
    for (const auto& [path, file] : objects) {
        failed += introspect_to(bus_->address(), path, file);
        live.push_back(file);
    }
    // Released before any assertion can end the test with the request held.
    EXPECT_TRUE(client_->call(kPath, kInterface, "Deny", "ss", id.c_str(), "").ok());
    ASSERT_EQ(held.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(held.get().status, 403U);
    ASSERT_TRUE(failed.empty()) << failed;
    EXPECT_TRUE(contains(read_text(root_ / "approval.xml"), R"(<interface name="com.tameflare.Daemon1.Approval">)"));

    const std::vector<std::string> unchecked{"com.tameflare.Daemon1.Agent"};
    const auto compared = compare_with_contract(kContract, live, unchecked);
    EXPECT_EQ(compared.status, 0) << "the exported interfaces differ from " << kContract << ":\n"
                                  << compared.out << compared.err;

    // The check can fail: a contract that differs by one method, one
    // argument's type, one sub-object's property or one interface's name
    // is reported, naming the difference.
    const std::string contract = read_text(kContract);
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string text = contract;
        if (const auto at = text.find(from); at != std::string::npos) text.replace(at, from.size(), to);
        return text;
    };
    std::string without_method = contract;
    const auto method = contract.find(R"(<method name="GetStatus">)");
    const auto method_end = contract.find("</method>", method);
    ASSERT_NE(method_end, std::string::npos) << "GetStatus is not in the contract";
    without_method.erase(method, method_end + std::strlen("</method>") - method);
    const std::vector<std::pair<std::string, std::string>> mutations{
        {without_method, "com.tameflare.Daemon1: method GetStatus is exported but not in the contract"},
        {replaced(R"(<arg type="h" name="cwd")", R"(<arg type="s" name="cwd")"),
         "com.tameflare.Daemon1: method Launch: the contract says"},
        {replaced(R"(<property name="AgeSeconds" type="t")", R"(<property name="AgeSeconds" type="u")"),
         "com.tameflare.Daemon1.Approval: property AgeSeconds: the contract says"},
        {replaced(R"(<interface name="com.tameflare.Daemon1.Gateway">)",
                  R"(<interface name="com.tameflare.Daemon1.Gateways">)"),
         "interface com.tameflare.Daemon1.Gateway is exported but not in the contract"},
    };
    for (std::size_t i = 0; i < mutations.size(); ++i) {
        const auto& [text, reported] = mutations[i];
        ASSERT_NE(text, contract) << "mutation " << i << " changed nothing: its text is no longer in the contract";
        const fs::path file = root_ / ("mutated-contract-" + std::to_string(i) + ".xml");
        std::ofstream(file) << text;
        const auto differs = compare_with_contract(file.string(), live, unchecked);
        EXPECT_EQ(differs.status, 1) << differs.out << differs.err;
        EXPECT_TRUE(contains(differs.out, reported)) << reported << "\n" << differs.out << differs.err;
    }
}

TEST_F(Dbus, EveryMethodAndPropertyAnswers) {
    // Reads.
    const auto status = call(std::nullopt, "GetStatus");
    ASSERT_EQ(status.status, 0) << status.err;
    EXPECT_EQ(document(status)["caller"]["role"], "owner") << status.out;
    EXPECT_EQ(document(status)["gateways"], 1) << status.out;
    EXPECT_EQ(document(call(std::nullopt, "ListGateways"))["gateways"][0]["name"], "one");
    EXPECT_EQ(document(call(std::nullopt, "GetGateway", {"s", "one"}))["enforcement"], "full");
    EXPECT_EQ(document(call(std::nullopt, "CheckConfig"))["valid"], true);
    const auto decision = call(std::nullopt, "TestRequest",
                               {"s", R"({"gateway": "one", "method": "POST", "url": "http://plain.test/x"})"});
    EXPECT_TRUE(contains(decision.out, "require_approval")) << decision.out << decision.err;
    EXPECT_EQ(data(call(std::nullopt, "ListAgents")), json::array({json::array()}));
    EXPECT_EQ(data(call(std::nullopt, "ListApprovals")), json::array({json::array()}));
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["active"], false);
    EXPECT_EQ(document(call(std::nullopt, "VerifyAudit"))["ok"], true);
    EXPECT_EQ(document(call(std::nullopt, "ListSecrets"))["secrets"], json::array());
    EXPECT_TRUE(contains(data(call(std::nullopt, "GetMetrics"))[0].get<std::string>(), "tameflare_agents"));

    // Changes, each undone.
    EXPECT_EQ(call(std::nullopt, "SetEnforcement", {"ss", "one", "monitor"}).status, 0);
    EXPECT_EQ(document(call(std::nullopt, "GetGateway", {"s", "one"}))["enforcement"], "monitor");
    EXPECT_EQ(call(std::nullopt, "SetEnforcement", {"ss", "one", "default"}).status, 0);
    EXPECT_EQ(call(std::nullopt, "Reload").status, 0);
    EXPECT_EQ(call(std::nullopt, "SetKillSwitch", {"bss", "true", "gateway:one", "drill"}).status, 0);
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["gateways"], json({"one"}));
    EXPECT_EQ(call(std::nullopt, "SetKillSwitch", {"bss", "false", "all", ""}).status, 0);
    const auto set = call(std::nullopt, "SetSecret", {"sss", "site-token", "site", "s3cret-value"});
    ASSERT_EQ(set.status, 0) << set.err;
    const auto secrets = call(std::nullopt, "ListSecrets");
    EXPECT_EQ(document(secrets)["secrets"][0]["name"], "site-token") << secrets.out;
    EXPECT_FALSE(contains(secrets.out, "s3cret-value")) << secrets.out;
    EXPECT_EQ(data(call(std::nullopt, "RotateVaultKey")), json::array({1}));
    EXPECT_EQ(call(std::nullopt, "RemoveSecret", {"s", "site-token"}).status, 0);

    // Logs: the changes above were audited with the D-Bus caller.
    const auto audit = call(std::nullopt, "QueryAudit", {"a{ss}", "2", "event", "kill_switch.", "since", "1h"});
    ASSERT_EQ(audit.status, 0) << audit.err;
    const std::string lines = data(audit)[0];
    EXPECT_TRUE(contains(lines, "via dbus (SetKillSwitch)")) << lines;
    EXPECT_EQ(json::parse(lines.substr(0, lines.find('\n')))["event"], "kill_switch.activated") << lines;
    const auto traffic = call(std::nullopt, "QueryTraffic", {"a{ss}", "1", "limit", "5"});
    EXPECT_EQ(traffic.status, 0) << traffic.err;
    EXPECT_EQ(data(traffic), json::array({""}));

    // Unknown ids reach the daemon and get its error (busctl shows the message).
    const auto stop = call(std::nullopt, "StopAgent", {"s", "nosuch"});
    EXPECT_NE(stop.status, 0);
    EXPECT_TRUE(contains(stop.err, "no agent \"nosuch\"")) << stop.err;
    EXPECT_TRUE(contains(stop.err, "(hint: ")) << stop.err;

    // Launch: kernel enforcement is off in this daemon, so it is refused as unavailable.
    const UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    const UniqueFd cwd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    const auto launch = client_->call(kPath, kInterface, "Launch", "sssasashhhh", "one", "", "", 1, "/bin/true", 0,
                                      null.get(), null.get(), null.get(), cwd.get());
    EXPECT_EQ(launch.error, "com.tameflare.Daemon1.Error.Unavailable") << launch;

    // Properties.
    EXPECT_EQ(json::parse(property(std::nullopt, "Version").out)["data"], "0.1.0");
    EXPECT_EQ(json::parse(property(std::nullopt, "KillSwitch").out)["data"], false);
    EXPECT_EQ(json::parse(property(std::nullopt, "KillSwitchScope").out)["data"], json::array());
    EXPECT_EQ(json::parse(property(std::nullopt, "PendingApprovals").out)["data"], 0);
    EXPECT_EQ(json::parse(property(std::nullopt, "Agents").out)["data"], 0);
    const auto all = busctl(std::nullopt, {"introspect", kName, kPath, kInterface});
    EXPECT_TRUE(contains(all.out, ".KillSwitch")) << all.out;

    // The gateway object.
    const std::string gateway = object_path("/com/tameflare/Daemon1/gateway", "one");
    const char* gateway_interface = "com.tameflare.Daemon1.Gateway";
    EXPECT_EQ(json::parse(property(std::nullopt, "Name", gateway, gateway_interface).out)["data"], "one");
    EXPECT_EQ(json::parse(property(std::nullopt, "Connectors", gateway, gateway_interface).out)["data"],
              json({"site"}));
    EXPECT_EQ(call(std::nullopt, "SetEnforcement", {"s", "soft"}, gateway, gateway_interface).status, 0);
    EXPECT_EQ(json::parse(property(std::nullopt, "EnforcementLevel", gateway, gateway_interface).out)["data"], "soft");
    const auto managed =
        busctl(std::nullopt, {"call", kName, kPath, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"});
    EXPECT_TRUE(contains(managed.out, "com.tameflare.Daemon1.Gateway")) << managed.out << managed.err;
}

TEST_F(Dbus, EachRoleMayDoWhatTheDocsSayAndTheBusPolicyGuardsTheRest) {
    // viewer: reads; answering and changing are the daemon's Forbidden (the hint names the group).
    const auto status = call(kViewer, "GetStatus");
    ASSERT_EQ(status.status, 0) << status.err;
    EXPECT_EQ(document(status)["caller"]["role"], "viewer") << status.out;
    EXPECT_EQ(document(status)["caller"]["uid"], kViewer.uid) << status.out;
    EXPECT_EQ(json::parse(property(kViewer, "KillSwitch").out)["data"], false);
    const auto approve = send(kViewer, "com.tameflare.Daemon1.Approve", {"string:whatever", "string:"});
    EXPECT_NE(approve.status, 0);
    EXPECT_TRUE(contains(approve.err, "com.tameflare.Daemon1.Error.Forbidden")) << approve.err;
    EXPECT_TRUE(contains(approve.err, "4243")) << approve.err;
    const auto no_switch =
        send(kViewer, "com.tameflare.Daemon1.SetKillSwitch", {"boolean:true", "string:all", "string:"});
    EXPECT_TRUE(contains(no_switch.err, "com.tameflare.Daemon1.Error.Forbidden")) << no_switch.err;

    // member: past the role check, to the unknown approval.
    const auto member = send(kMember, "com.tameflare.Daemon1.Approve", {"string:whatever", "string:fine"});
    EXPECT_TRUE(contains(member.err, "com.tameflare.Daemon1.Error.UnknownApproval")) << member.err;
    const auto no_level = send(kMember, "com.tameflare.Daemon1.SetEnforcement", {"string:one", "string:monitor"});
    EXPECT_TRUE(contains(no_level.err, "com.tameflare.Daemon1.Error.Forbidden")) << no_level.err;

    // admin: the enforcement level; not the kill switch.
    EXPECT_EQ(send(kAdmin, "com.tameflare.Daemon1.SetEnforcement", {"string:one", "string:monitor"}).status, 0);
    EXPECT_EQ(document(call(kViewer, "GetGateway", {"s", "one"}))["enforcement"], "monitor");
    const auto admin_switch =
        send(kAdmin, "com.tameflare.Daemon1.SetKillSwitch", {"boolean:true", "string:all", "string:"});
    EXPECT_TRUE(contains(admin_switch.err, "Error.Forbidden")) << admin_switch.err;
    EXPECT_TRUE(contains(admin_switch.err, "4241")) << admin_switch.err;

    // owner: the kill switch, recorded with the D-Bus caller.
    EXPECT_EQ(call(kOwner, "SetKillSwitch", {"bss", "true", "all", "drill"}).status, 0);
    const auto kill = document(call(kViewer, "GetKillSwitch"));
    EXPECT_EQ(kill["active"], true) << kill;
    EXPECT_TRUE(contains(kill.value("actor", ""), "uid:4201")) << kill;
    EXPECT_TRUE(contains(kill.value("actor", ""), "via dbus (SetKillSwitch)")) << kill;
    EXPECT_EQ(call(kOwner, "SetKillSwitch", {"bss", "false", "all", ""}).status, 0);

    // No role: the bus refuses all but launching and the own agents.
    const auto nobody = send(kNobody, "com.tameflare.Daemon1.GetStatus", {});
    EXPECT_NE(nobody.status, 0);
    EXPECT_TRUE(contains(nobody.err, "org.freedesktop.DBus.Error.AccessDenied")) << nobody.err;
    const auto nobody_property = property(kNobody, "KillSwitch");
    EXPECT_NE(nobody_property.status, 0);
    EXPECT_TRUE(contains(nobody_property.err, "denied") || contains(nobody_property.err, "Denied"))
        << nobody_property.err;
    const auto own = call(kNobody, "ListAgents");
    ASSERT_EQ(own.status, 0) << own.err;
    EXPECT_EQ(data(own), json::array({json::array()}));
    const auto stop = send(kNobody, "com.tameflare.Daemon1.StopAgent", {"string:nosuch"});
    EXPECT_TRUE(contains(stop.err, "com.tameflare.Daemon1.Error.UnknownAgent")) << stop.err;
    // ... and the bus gives no role user the daemon's signals.
    const auto nothing =
        send(kNobody, "com.tameflare.Daemon1.SetKillSwitch", {"boolean:true", "string:all", "string:"});
    EXPECT_TRUE(contains(nothing.err, "AccessDenied")) << nothing.err;
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["active"], false);
}

TEST_F(Dbus, HeldRequestIsSignalledListedAsAnObjectAndApproved) {
    const std::string listen = daemon_->field("EXPLICIT_LISTEN");
    ASSERT_FALSE(listen.empty()) << daemon_->log();
    client_->watch(kInterface, nullptr);
    client_->watch("org.freedesktop.DBus.ObjectManager", nullptr);

    auto approved = std::async(std::launch::async, [&] { return proxy_request(listen, url("/merge")); });
    const auto pending = wait_for_pending();
    ASSERT_TRUE(pending.is_object()) << daemon_->log();
    EXPECT_EQ(pending["gateway"], "one") << pending;
    EXPECT_EQ(pending["action"], "http.post") << pending;
    const std::string id = pending["id"];
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("ApprovalRequested").empty(); }));
    {
        auto* signal = client_->seen("ApprovalRequested").front();
        const char* args[6] = {};
        ASSERT_GT(sd_bus_message_read(signal, "ssssss", &args[0], &args[1], &args[2], &args[3], &args[4], &args[5]), 0);
        EXPECT_EQ(args[0], id);
        EXPECT_STREQ(args[1], "one");
        EXPECT_STREQ(args[3], "http.post");
        EXPECT_TRUE(json::parse(args[5], nullptr, false).is_object()) << args[5];
    }
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("InterfacesAdded").empty(); }));

    // The approval object: in the tree, its properties readable by a viewer.
    const std::string path = object_path("/com/tameflare/Daemon1/approval", id);
    const auto paths = tree();
    EXPECT_NE(std::find(paths.begin(), paths.end(), path), paths.end()) << ::testing::PrintToString(paths);
    const char* approval_interface = "com.tameflare.Daemon1.Approval";
    EXPECT_EQ(json::parse(property(kViewer, "Action", path, approval_interface).out)["data"], "http.post");
    EXPECT_EQ(json::parse(property(kViewer, "Id", path, approval_interface).out)["data"], id);
    EXPECT_TRUE(
        json::parse(
            json::parse(property(kViewer, "Parameters", path, approval_interface).out)["data"].get<std::string>(),
            nullptr, false)
            .is_object());
    EXPECT_EQ(json::parse(property(kViewer, "PendingApprovals").out)["data"], 1);
    EXPECT_EQ(json::parse(property(std::nullopt, "AgeSeconds", path, approval_interface).out)["type"], "t");

    // A viewer may not answer; a huge note is refused; nothing went out meanwhile.
    const auto refused = send(kViewer, "com.tameflare.Daemon1.Approval.Approve", {"string:"}, path);
    EXPECT_TRUE(contains(refused.err, "com.tameflare.Daemon1.Error.Forbidden")) << refused.err;
    const auto huge = client_->call(path, approval_interface, "Approve", "s", std::string(100000, 'n').c_str());
    EXPECT_EQ(huge.error, "com.tameflare.Daemon1.Error.BadField") << huge;
    EXPECT_EQ(upstream_.requests().size(), 0U);

    // A member approves on the object; the request goes through.
    const auto answer = call(kMember, "Approve", {"s", "looks fine"}, path, approval_interface);
    ASSERT_EQ(answer.status, 0) << answer.err;
    ASSERT_EQ(approved.wait_for(20s), std::future_status::ready);
    const auto got = approved.get();
    EXPECT_EQ(got.status, 200U);
    EXPECT_EQ(got.upstream, "test");
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("ApprovalResolved").empty(); }));
    {
        auto* signal = client_->seen("ApprovalResolved").front();
        const char* signal_id = nullptr;
        int yes = 0;
        const char* actor = nullptr;
        const char* note = nullptr;
        ASSERT_GT(sd_bus_message_read(signal, "sbss", &signal_id, &yes, &actor, &note), 0);
        EXPECT_EQ(signal_id, id);
        EXPECT_TRUE(yes);
        EXPECT_TRUE(contains(actor, "uid:4203")) << actor;
        EXPECT_STREQ(note, "looks fine");
    }
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("InterfacesRemoved").empty(); }));
    const auto after = tree();
    EXPECT_EQ(std::find(after.begin(), after.end(), path), after.end()) << ::testing::PrintToString(after);
    const auto again = client_->call(kPath, kInterface, "Deny", "ss", id.c_str(), "");
    EXPECT_EQ(again.error, "com.tameflare.Daemon1.Error.Conflict") << again;

    // Denied over the main interface: the agent gets 403.
    auto denied = std::async(std::launch::async, [&] { return proxy_request(listen, url("/merge")); });
    const auto second = wait_for_pending();
    ASSERT_TRUE(second.is_object()) << daemon_->log();
    EXPECT_EQ(call(kMember, "Deny", {"ss", second["id"].get<std::string>(), "no"}).status, 0);
    ASSERT_EQ(denied.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(denied.get().status, 403U);
    EXPECT_EQ(upstream_.requests().size(), 1U);
}

TEST_F(Dbus, KillSwitchChangesAreSignalledWithTheirProperties) {
    client_->watch(kInterface, "KillSwitchChanged");
    client_->watch("org.freedesktop.DBus.Properties", "PropertiesChanged");
    Subprocess monitor({"/bin/sh", "-c", R"(exec /usr/bin/busctl --address="$0" --no-pager monitor "$1" 1>&2)",
                        bus_->address(), kName});
    ASSERT_TRUE(monitor.wait_for_stderr("Monitoring")) << monitor.err();

    const auto on = call(kOwner, "SetKillSwitch", {"bss", "true", "connector:site", "drill"});
    ASSERT_EQ(on.status, 0) << on.err;
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("KillSwitchChanged").empty(); }));
    auto* signal = client_->seen("KillSwitchChanged").front();
    int active = 0;
    const char* reason = nullptr;
    const char* actor = nullptr;
    ASSERT_GT(sd_bus_message_read(signal, "bss", &active, &reason, &actor), 0);
    EXPECT_TRUE(active);
    EXPECT_STREQ(reason, "drill");
    EXPECT_TRUE(contains(actor, "uid:4201 ")) << actor;
    ASSERT_TRUE(client_->wait_until([&] {
        for (auto* changed : client_->seen("PropertiesChanged")) {
            if (changed_kill_switch(changed) == std::optional<bool>(true)) return true;
        }
        return false;
    }));
    EXPECT_EQ(json::parse(property(kViewer, "KillSwitchScope").out)["data"], json({"connector:site"}));
    EXPECT_TRUE(monitor.wait_for_stderr("KillSwitchChanged")) << monitor.err();

    EXPECT_EQ(call(kOwner, "SetKillSwitch", {"bss", "false", "all", ""}).status, 0);
    EXPECT_TRUE(client_->wait_until([&] {
        for (auto* changed : client_->seen("PropertiesChanged")) {
            if (changed_kill_switch(changed) == std::optional<bool>(false)) return true;
        }
        return false;
    }));
}

TEST_F(Dbus, BadInputIsRefusedWithItsErrorAndChangesNothing) {
    const auto expect_error = [&](const Reply& reply, const std::string& name) {
        EXPECT_EQ(reply.error, name) << reply;
        EXPECT_FALSE(reply.message.empty()) << reply;
    };
    const std::string prefix = "com.tameflare.Daemon1.Error.";
    expect_error(client_->call(kPath, kInterface, "GetGateway", "s", "nosuch"), prefix + "UnknownGateway");
    expect_error(client_->call(kPath, kInterface, "Approve", "ss", "nosuch", ""), prefix + "UnknownApproval");
    expect_error(client_->call(kPath, kInterface, "Deny", "ss", "nosuch", ""), prefix + "UnknownApproval");
    expect_error(client_->call(kPath, kInterface, "StopAgent", "s", "nosuch"), prefix + "UnknownAgent");
    expect_error(client_->call(kPath, kInterface, "RemoveSecret", "s", "nosuch"), prefix + "UnknownSecret");
    expect_error(client_->call(kPath, kInterface, "SetEnforcement", "ss", "nosuch", "soft"), prefix + "UnknownGateway");
    expect_error(client_->call(kPath, kInterface, "SetEnforcement", "ss", "one", "max"), prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "SetKillSwitch", "bss", 1, "planet:earth", ""), prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "SetSecret", "sss", "bad name!", "", "x"), prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "SetSecret", "sss", "token", "", ""), prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "TestRequest", "s", "{not json"), prefix + "BadJson");
    expect_error(client_->call(kPath, kInterface, "TestRequest", "s", R"({"gateway": "one", "url": 1})"),
                 prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "QueryTraffic", "a{ss}", 1, "since", "yesterday"),
                 prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "QueryTraffic", "a{ss}", 1, "event", "x"), prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "QueryAudit", "a{ss}", 2, "limit", "1", "limit", "2"),
                 prefix + "BadField");
    expect_error(client_->call(kPath, kInterface, "SetKillSwitch", "bss", 1, "all", std::string(5000, 'r').c_str()),
                 prefix + "BadField");
    expect_error(client_->call(object_path("/com/tameflare/Daemon1/approval", "nosuch"),
                               "com.tameflare.Daemon1.Approval", "Approve", "s", ""),
                 "org.freedesktop.DBus.Error.UnknownObject");
    // Wrong argument types never reach the daemon's code.
    expect_error(client_->call(kPath, kInterface, "Approve", "u", 5U), "org.freedesktop.DBus.Error.InvalidArgs");
    expect_error(client_->call(kPath, kInterface, "SetKillSwitch", "sss", "yes", "all", ""),
                 "org.freedesktop.DBus.Error.InvalidArgs");
    expect_error(client_->call(kPath, kInterface, "NoSuchMethod", ""), "org.freedesktop.DBus.Error.UnknownMethod");
    const auto typed = call(std::nullopt, "Approve", {"u", "5"});
    EXPECT_NE(typed.status, 0);

    // Nothing changed, and the daemon still serves.
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["active"], false);
    EXPECT_EQ(document(call(std::nullopt, "GetGateway", {"s", "one"}))["enforcement"], "full");
    EXPECT_EQ(document(call(std::nullopt, "ListSecrets"))["secrets"], json::array());
    EXPECT_TRUE(contains(daemon_->log(), "tameflared started"));
    EXPECT_FALSE(contains(daemon_->log(), "stopping"));
}

TEST_F(Dbus, ACallerWhosePidChangedHandsMayReadButNotChangeState) {
    const std::string identity = caller_identity();
    ASSERT_TRUE(identity == "bus-pidfd" || identity == "tracked") << daemon_->log();
    if (const auto reason = missing_python_dbus(); !reason.empty()) GTEST_SKIP() << reason;

    OrphanedConnection orphan(root_, bus_->address());
    ASSERT_TRUE(orphan.ok()) << orphan.why();
    // While the process that opened it lived, the connection was an ordinary caller.
    ASSERT_TRUE(orphan.opened()["before"].contains("ok")) << orphan.opened() << daemon_->log();
    // That process is reaped, and its pid given to another (root, outside
    // any agent: before this check, the daemon would have judged the
    // connection's calls by it and let them change state).
    const PidImpostor impostor(orphan.opener());
    std::cout << "[ PID REUSE ] pid " << orphan.opener()
              << (impostor.ok() ? " belongs to another process now" : " not reused: " + impostor.error()) << std::endl;
    const json got = orphan.calls();
    ASSERT_TRUE(got.is_object()) << daemon_->log();
    ASSERT_NE(got.value("survivor", 0), orphan.opener());

    // A call that changes state is refused, saying why and what to do.
    EXPECT_EQ(got["change"].value("error", ""), "org.freedesktop.DBus.Error.AccessDenied") << got;
    const std::string message = got["change"].value("message", "");
    EXPECT_TRUE(contains(message, "SetKillSwitch")) << message;
    EXPECT_TRUE(contains(message, "pid " + std::to_string(orphan.opener()) + ") has exited")) << message;
    EXPECT_TRUE(contains(message, "reconnect")) << message;
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["active"], false);
    // Logged once, with fields to find it by.
    const std::string name = orphan.opened().value("name", "");
    const auto log = daemon_->log();
    const auto refused = log.find("D-Bus call refused");
    ASSERT_NE(refused, std::string::npos) << log;
    EXPECT_EQ(log.find("D-Bus call refused", refused + 1), std::string::npos) << log;
    const std::string line = log.substr(refused, log.find('\n', refused) - refused);
    for (const std::string& field : std::vector<std::string>{
             "DBUS_METHOD=SetKillSwitch", "DBUS_SENDER=" + name, "REASON=exited",
             "CALLER_PID=" + std::to_string(orphan.opener()), "DBUS_CALLER_IDENTITY=" + identity}) {
        EXPECT_TRUE(contains(line, field)) << field << "\n" << line;
    }
    // A read is still answered: by the pid's current process, as before.
    if (impostor.ok()) {
        EXPECT_TRUE(got["read"].contains("ok")) << got;
    } else {
        EXPECT_EQ(got["read"].value("error", ""), "org.freedesktop.DBus.Error.AccessDenied") << got;
    }
    // An ordinary caller still changes state.
    EXPECT_EQ(call(std::nullopt, "SetKillSwitch", {"bss", "true", "all", "drill"}).status, 0);
    EXPECT_EQ(call(std::nullopt, "SetKillSwitch", {"bss", "false", "all", ""}).status, 0);
}

TEST_F(Dbus, AConnectionOlderThanTheDaemonIsJudgedByWhenItsProcessStarted) {
    if (caller_identity() != "tracked") GTEST_SKIP() << "the bus gives ProcessFD: the daemon tracks no connections";
    if (const auto reason = missing_python_dbus(); !reason.empty()) GTEST_SKIP() << reason;
    // Connections opened while no daemon runs appear before the next one's watch.
    daemon_->process().signal(SIGTERM);
    ASSERT_EQ(daemon_->process().wait(), 0) << daemon_->log();
    OrphanedConnection orphan(root_, bus_->address());
    ASSERT_TRUE(orphan.ok()) << orphan.why();
    ASSERT_NO_FATAL_FAILURE(start_daemon("daemon-again.log"));
    ASSERT_EQ(caller_identity(), "tracked");

    // This process opened client_ before the daemon started, and lives: it may change state.
    const auto on = client_->call(kPath, kInterface, "SetKillSwitch", "bss", 1, "gateway:one", "old connection");
    EXPECT_TRUE(on.ok()) << on << daemon_->log();
    EXPECT_TRUE(client_->call(kPath, kInterface, "SetKillSwitch", "bss", 0, "all", "").ok());

    // The orphan's pid goes to a process that started after the daemon
    // began watching: not the process that opened the (older) connection.
    const PidImpostor impostor(orphan.opener());
    if (!impostor.ok()) GTEST_SKIP() << "pid " << orphan.opener() << " cannot be reused: " << impostor.error();
    const json got = orphan.calls();
    ASSERT_TRUE(got.is_object()) << daemon_->log();
    EXPECT_EQ(got["change"].value("error", ""), "org.freedesktop.DBus.Error.AccessDenied") << got;
    EXPECT_TRUE(contains(got["change"].value("message", ""), "started after")) << got;
    EXPECT_TRUE(contains(daemon_->log(), "REASON=started_after")) << daemon_->log();
    EXPECT_TRUE(got["read"].contains("ok")) << got;
    EXPECT_EQ(document(call(std::nullopt, "GetKillSwitch"))["active"], false);
}

// ---------------------------------------------------------------------------
// Launch over D-Bus, with kernel enforcement (root, BTF, cgroup2).

class DbusLaunch : public ::testing::Test {
protected:
    void SetUp() override {
        if (const auto reason = missing_tools(); !reason.empty()) GTEST_SKIP() << reason;
        if (const std::string reason = bpf::unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
        const std::string tag = std::to_string(::getpid());
        cgroup_root_ = netns::cgroup2_mount() / ("tf-dbus-test-" + tag);
        pins_ = fs::path("/sys/fs/bpf") / ("tf-dbus-test-" + tag);
        fs::permissions(root_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
        bus_ = std::make_unique<PrivateBus>(root_);
        ASSERT_TRUE(bus_->ready()) << bus_->log();
        fs::create_directories(root_ / "gateways.d");
        std::ofstream(root_ / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run",
                  "agents": {"cgroup_root": ")"
            << cgroup_root_.string() << R"(", "bpf_pin_dir": ")" << pins_.string() << R"("},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false},
                  "api": {"socket": ")"
            << (root_ / "api.sock").string() << R"("}, "dbus": {"bus": "system"}})";
        std::ofstream(root_ / "gateways.d" / "one.json") << R"({"name": "one",
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
        daemon_ =
            std::make_unique<DaemonProcess>(TAMEFLARED_BINARY, root_ / "tameflared.json", root_ / "daemon.log",
                                            std::vector<std::string>{"DBUS_SYSTEM_BUS_ADDRESS=" + bus_->address()});
        ASSERT_TRUE(daemon_->wait_for_log("tameflared started")) << daemon_->log();
        ASSERT_TRUE(daemon_->field("DBUS").starts_with(":")) << daemon_->log();
        client_ = std::make_unique<BusClient>(bus_->address());
    }

    void TearDown() override {
        client_.reset();
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

    TempDir temp_{"tf-dbus-launch"};
    const fs::path root_ = temp_.path();
    fs::path cgroup_root_;
    fs::path pins_;
    std::unique_ptr<PrivateBus> bus_;
    std::unique_ptr<DaemonProcess> daemon_;
    std::unique_ptr<BusClient> client_;
};

TEST_F(DbusLaunch, LaunchPassesTheDescriptorsAndSignalsTheExit) {
    client_->watch(kInterface, nullptr);
    client_->watch("com.tameflare.Daemon1.Agent", "Exited");
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    const UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    const UniqueFd cwd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    const auto launched =
        client_->call(kPath, kInterface, "Launch", "sssasashhhh", "one", "hello", "", 3, "/bin/sh", "-c", "echo hi", 1,
                      "GREETING=1", null.get(), write_end.get(), null.get(), cwd.get());
    ASSERT_TRUE(launched.ok()) << launched << daemon_->log();
    EXPECT_EQ(launched.text(), "hello");
    write_end.reset();  // the agent holds the only write end now
    std::string out;
    char buffer[256];
    ssize_t n = 0;
    while ((n = ::read(read_end.get(), buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
    EXPECT_EQ(out, "hi\n");

    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("AgentExited").empty(); })) << daemon_->log();
    const char* id = nullptr;
    int status = -1;
    ASSERT_GT(sd_bus_message_read(client_->seen("AgentExited").front(), "si", &id, &status), 0);
    EXPECT_STREQ(id, "hello");
    EXPECT_EQ(status, 0);
    EXPECT_FALSE(client_->seen("AgentStarted").empty());
    // The launcher's own notice, on the agent's object.
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("Exited").empty(); }));
    EXPECT_EQ(std::string(sd_bus_message_get_path(client_->seen("Exited").front())),
              object_path("/com/tameflare/Daemon1/agent", "hello"));
}

TEST_F(DbusLaunch, AgentObjectsComeAndGoAndAgentsAreRefusedTheControlPlane) {
    client_->watch(kInterface, nullptr);
    client_->watch("org.freedesktop.DBus.ObjectManager", nullptr);
    const UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    const UniqueFd cwd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    const auto launched = client_->call(kPath, kInterface, "Launch", "sssasashhhh", "one", "sleeper", "cgroup", 2,
                                        "/bin/sleep", "60", 0, null.get(), null.get(), null.get(), cwd.get());
    ASSERT_TRUE(launched.ok()) << launched << daemon_->log();
    ASSERT_TRUE(client_->wait_until([&] { return !client_->seen("InterfacesAdded").empty(); })) << daemon_->log();

    // The agent's object, its properties, and Stop on it.
    const std::string path = object_path("/com/tameflare/Daemon1/agent", "sleeper");
    const auto paths = run({"/usr/bin/busctl", "--address=" + bus_->address(), "--no-pager", "tree", "--list", kName});
    EXPECT_TRUE(contains(paths.out, path + "\n")) << paths.out;
    const auto gateway = run({"/usr/bin/busctl", "--address=" + bus_->address(), "--json=short", "get-property", kName,
                              path, "com.tameflare.Daemon1.Agent", "Gateway"});
    EXPECT_EQ(json::parse(gateway.out, nullptr, false)["data"], "one") << gateway.out << gateway.err;
    const auto agents = client_->call(kPath, kInterface, "ListAgents", "");
    ASSERT_TRUE(agents.ok()) << agents;
    const char* id = nullptr;
    const char* agent_gateway = nullptr;
    std::uint32_t uid = 1;
    std::uint32_t pid = 0;
    const char* isolation = nullptr;
    ASSERT_GT(sd_bus_message_enter_container(agents.reply.get(), 'a', "(ssuus)"), 0);
    ASSERT_GT(sd_bus_message_read(agents.reply.get(), "(ssuus)", &id, &agent_gateway, &uid, &pid, &isolation), 0);
    EXPECT_STREQ(id, "sleeper");
    EXPECT_EQ(uid, 0U);
    EXPECT_GT(pid, 0U);
    EXPECT_STREQ(isolation, "cgroup");

    // A process inside an agent is refused whatever its user (here launched by root).
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    const std::string bus = "--bus=" + bus_->address();
    const auto probe =
        client_->call(kPath, kInterface, "Launch", "sssasashhhh", "one", "probe", "", 6, "/usr/bin/dbus-send",
                      bus.c_str(), "--print-reply", "--dest=com.tameflare.Daemon1", kPath,
                      "com.tameflare.Daemon1.GetStatus", 0, null.get(), write_end.get(), write_end.get(), cwd.get());
    ASSERT_TRUE(probe.ok()) << probe << daemon_->log();
    write_end.reset();
    std::string out;
    char buffer[512];
    ssize_t n = 0;
    while ((n = ::read(read_end.get(), buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
    // The sandbox refuses the daemon's bus to every agent (the unix socket filter: EPERM; a kernel without it
    // covers the socket: refused); a caller that got through would be refused by the daemon as AgentCaller.
    EXPECT_TRUE(contains(out, "Operation not permitted") || contains(out, "Connection refused") ||
                contains(out, "com.tameflare.Daemon1.Error.AgentCaller"))
        << out;
    EXPECT_FALSE(contains(out, "method return")) << out;

    const auto stop = client_->call(path, "com.tameflare.Daemon1.Agent", "Stop", "");
    ASSERT_TRUE(stop.ok()) << stop;
    ASSERT_TRUE(client_->wait_until([&] {
        for (auto* exited : client_->seen("AgentExited")) {
            const char* which = nullptr;
            int status = 0;
            if (sd_bus_message_rewind(exited, 1) >= 0 && sd_bus_message_read(exited, "si", &which, &status) > 0 &&
                std::string(which) == "sleeper") {
                return true;
            }
        }
        return false;
    })) << daemon_->log();
    // The probe agent's object went earlier: wait for this one's.
    ASSERT_TRUE(client_->wait_until([&] {
        for (auto* removed : client_->seen("InterfacesRemoved")) {
            const char* object = nullptr;
            if (sd_bus_message_rewind(removed, 1) >= 0 && sd_bus_message_read(removed, "o", &object) > 0 &&
                path == object) {
                return true;
            }
        }
        return false;
    }));
    const auto after = client_->call(path, "com.tameflare.Daemon1.Agent", "Stop", "");
    EXPECT_EQ(after.error, "org.freedesktop.DBus.Error.UnknownObject") << after;
}

TEST_F(DbusLaunch, TheAgentObjectMatchesTheXmlContract) {
    if (const auto reason = missing_python(); !reason.empty()) GTEST_SKIP() << reason;
    client_->watch("org.freedesktop.DBus.ObjectManager", "InterfacesAdded");
    const UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    const UniqueFd cwd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    const auto launched = client_->call(kPath, kInterface, "Launch", "sssasashhhh", "one", "contract", "cgroup", 2,
                                        "/bin/sleep", "60", 0, null.get(), null.get(), null.get(), cwd.get());
    ASSERT_TRUE(launched.ok()) << launched << daemon_->log();
    const std::string path = object_path("/com/tameflare/Daemon1/agent", "contract");
    ASSERT_TRUE(client_->wait_until([&] {
        for (auto* added : client_->seen("InterfacesAdded")) {
            const char* object = nullptr;
            if (sd_bus_message_rewind(added, 1) >= 0 && sd_bus_message_read(added, "o", &object) > 0 &&
                path == object) {
                return true;
            }
        }
        return false;
    })) << daemon_->log();

    const fs::path live = root_ / "agent.xml";
    const std::string failed = introspect_to(bus_->address(), path, live);
    const auto stop = client_->call(path, "com.tameflare.Daemon1.Agent", "Stop", "");
    EXPECT_TRUE(stop.ok()) << stop;
    ASSERT_TRUE(failed.empty()) << failed;
    EXPECT_TRUE(contains(read_text(live), R"(<interface name="com.tameflare.Daemon1.Agent">)")) << read_text(live);
    // The other interfaces are checked by Dbus.TheIntrospectionMatchesTheXmlContract.
    const auto compared = compare_with_contract(
        kContract, {live},
        {"com.tameflare.Daemon1", "com.tameflare.Daemon1.Gateway", "com.tameflare.Daemon1.Approval"});
    EXPECT_EQ(compared.status, 0) << "the agent object's interface differs from " << kContract << ":\n"
                                  << compared.out << compared.err;
}

}  // namespace
}  // namespace tameflare::testing
