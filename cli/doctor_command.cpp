// tf doctor: a self-test any user can run. It checks what the host offers,
// then launches a probe agent (tf itself, through tameflared) that tries the
// ways out and reports each enforcement property as PASS or FAIL.
#include "cli/commands.h"
#include "cli/launch_client.h"
#include "common/unique_fd.h"
#include "netns/cgroup.h"

// Before ldns: its common.h defines `bool` as a macro when the compiler is clang.
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <getopt.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tameflare::cli {
namespace {

constexpr const char* kDoctorUsage =
    R"(Usage: tf doctor --gateway G [--isolation netns|cgroup] [--socket PATH] [-c FILE]

Checks that kernel enforcement works here: the kernel's BTF and cgroup2, the
launch socket, and then, from inside a probe agent launched on gateway G (you
must be allowed to launch there), each layer of the agent's sandbox and each
way out it closes. Prints one line per check: PASS, FALLBACK (closed by a
documented weaker substitute, because this kernel lacks the layer) or FAIL,
with the reason.

Exit status: 0 no check failed; 1 a check failed; 2 usage.
)";

struct Check {
    std::string name;
    bool pass = false;
    std::string detail;
    bool fallback = false;  // with pass: closed by a fallback, not by the layer itself
};

void print(const Check& check) {
    const char* verdict = !check.pass ? "FAIL" : check.fallback ? "FALLBACK" : "PASS";
    std::printf("%s  %-44s %s\n", verdict, check.name.c_str(), check.detail.c_str());
    std::fflush(stdout);
}

// The sandbox layers as the daemon applied them (TAMEFLARE_SANDBOX: "name=pass,name=fallback,...").
std::vector<std::pair<std::string, std::string>> sandbox_layers() {
    std::vector<std::pair<std::string, std::string>> layers;
    const char* text = std::getenv("TAMEFLARE_SANDBOX");
    std::istringstream in(text != nullptr ? text : "");
    for (std::string item; std::getline(in, item, ',');) {
        const auto equals = item.find('=');
        if (equals != std::string::npos) layers.emplace_back(item.substr(0, equals), item.substr(equals + 1));
    }
    return layers;
}

std::string layer_state(const std::string& name) {
    for (const auto& [layer, state] : sandbox_layers()) {
        if (layer == name) return state;
    }
    return "missing";
}

std::string error_text(int error) {
    return std::strerror(error);
}

bool status_field_is(const std::string& field, const std::string& value) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) == 0) return line.find(value, field.size() + 1) != std::string::npos;
    }
    return false;
}

// TCP to a loopback port where nothing listens: under enforcement it lands on
// the agent's proxy, which refuses a host no connector serves (403), and the
// agent still sees the address it dialed.
template <class Address>
Check tcp_redirected(const std::string& name, int family, const Address& address, const std::string& expected_peer) {
    const UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return {name, false, "connect: " + error_text(errno) + " (expected the proxy to answer)"};
    }
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    ::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &length);
    char text[INET6_ADDRSTRLEN] = {};
    const void* raw = family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&peer)->sin_addr)
                                        : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr);
    ::inet_ntop(family, raw, text, sizeof text);
    constexpr std::string_view kRequest =
        "GET /tf-doctor HTTP/1.1\r\nHost: doctor.invalid\r\nConnection: close\r\n\r\n";
    if (::send(fd.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL) < 0) return {name, false, error_text(errno)};
    std::array<char, 64> reply{};
    pollfd ready{fd.get(), POLLIN, 0};
    const auto got = ::poll(&ready, 1, 10000) == 1 ? ::recv(fd.get(), reply.data(), reply.size() - 1, 0) : -1;
    const std::string status(reply.data(), got > 0 ? static_cast<std::size_t>(got) : 0);
    const bool decided = status.rfind("HTTP/1.1 403", 0) == 0;
    const bool peer_kept = expected_peer == text;
    return {name, decided && peer_kept,
            std::string(decided ? "the proxy decided (403)" : "no policy answer") + ", peer seen as " + text};
}

Check udp_refused() {
    const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool refused = ::sendto(fd.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0;
    return {"UDP other than DNS is refused", refused && errno == EPERM,
            refused ? error_text(errno) : "a datagram to 127.0.0.1:9 was sent"};
}

Check raw_refused() {
    const int fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (fd >= 0) ::close(fd);
    return {"raw sockets are refused", fd < 0, fd < 0 ? error_text(errno) : "a raw ICMP socket was created"};
}

// A query for a name no gateway serves: the agent's DNS stub answers it
// REFUSED, without asking anyone.
Check dns_refused() {
    const std::string name = "tf-doctor.invalid";
    Check check{"DNS goes to the stub, unknown names refused", false, ""};
    std::unique_ptr<ldns_pkt, decltype(&ldns_pkt_free)> query(
        ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD),
        ldns_pkt_free);
    std::uint8_t* wire = nullptr;
    std::size_t size = 0;
    if (!query || ldns_pkt2wire(&wire, query.get(), &size) != LDNS_STATUS_OK) return check;
    const std::unique_ptr<std::uint8_t, decltype(&std::free)> owned(wire, std::free);
    const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    ::inet_pton(AF_INET, "127.0.0.53", &to.sin_addr);
    if (::sendto(fd.get(), wire, size, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
        check.detail = "sendto: " + error_text(errno);
        return check;
    }
    pollfd ready{fd.get(), POLLIN, 0};
    std::array<std::uint8_t, 512> reply{};
    sockaddr_in from{};
    socklen_t length = sizeof from;
    const auto got = ::poll(&ready, 1, 5000) == 1 ? ::recvfrom(fd.get(), reply.data(), reply.size(), 0,
                                                               reinterpret_cast<sockaddr*>(&from), &length)
                                                  : -1;
    ldns_pkt* parsed = nullptr;
    if (got <= 0 || ldns_wire2pkt(&parsed, reply.data(), static_cast<std::size_t>(got)) != LDNS_STATUS_OK) {
        check.detail = "no answer";
        return check;
    }
    const std::unique_ptr<ldns_pkt, decltype(&ldns_pkt_free)> answer(parsed, ldns_pkt_free);
    check.pass = ldns_pkt_get_rcode(answer.get()) == LDNS_RCODE_REFUSED && from.sin_port == htons(53);
    check.detail = check.pass ? "REFUSED, as from the server asked" : "unexpected answer";
    return check;
}

Check cgroup_escape_refused() {
    std::filesystem::path mount;
    try {
        mount = netns::cgroup2_mount();
    } catch (const std::exception&) {
        return {"leaving the cgroup is refused", true, "no cgroup2 mount visible"};
    }
    std::ofstream procs(mount / "cgroup.procs");
    procs << "0" << std::flush;
    const bool refused = !procs;
    return {"leaving the cgroup is refused", refused, refused ? "cgroup.procs not writable" : "moved out!"};
}

// /proc shows the agent's own processes only, and a pid outside cannot be named.
Check processes_hidden(pid_t outside) {
    std::size_t visible = 0;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
        const std::string name = entry.path().filename().string();
        if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            ++visible;
        }
    }
    const bool unnamed = ::kill(outside, 0) != 0 && errno == ESRCH;
    return {"processes outside cannot be seen or signalled", unnamed && ::getpid() < 100,
            std::to_string(visible) + " process(es) in /proc, pid " + std::to_string(::getpid()) + "; pid " +
                std::to_string(outside) + " outside: " + (unnamed ? "no such process" : "reachable!")};
}

// The PID namespace's init is outside the agent's Landlock domain and not dumpable.
Check ptrace_refused() {
    const long attached = ::ptrace(PTRACE_ATTACH, 1, nullptr, nullptr);
    const int error = errno;
    if (attached == 0) ::ptrace(PTRACE_DETACH, 1, nullptr, nullptr);
    return {"ptrace of a process outside is refused", attached != 0,
            attached != 0 ? "PTRACE_ATTACH to the namespace's init: " + error_text(error) : "attached!"};
}

Check unix_connect_refused(const std::string& name, const std::string& address, const std::string& layer) {
    const UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un to{};
    to.sun_family = AF_UNIX;
    const bool abstract = address.rfind('@', 0) == 0;
    const std::size_t length = std::min(address.size(), sizeof to.sun_path - 1);
    std::memcpy(to.sun_path, address.data(), length);
    if (abstract) to.sun_path[0] = '\0';
    const auto size = static_cast<socklen_t>(abstract ? offsetof(sockaddr_un, sun_path) + length : sizeof to);
    const bool refused = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), size) != 0;
    const int error = errno;
    Check check{name, refused, refused ? error_text(error) : "connected to " + address};
    // Only the filter says EPERM; a hidden socket (the fallback) is simply not there.
    check.fallback = refused && error != EPERM && layer_state(layer) != "pass";
    return check;
}

Check bind_loopback_only() {
    const UniqueFd any(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t length = sizeof address;
    if (::bind(any.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(any.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        return {"binding is loopback only", false, "bind 0.0.0.0: " + error_text(errno)};
    }
    char bound[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &address.sin_addr, bound, sizeof bound);
    const UniqueFd other(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in documentation{};
    documentation.sin_family = AF_INET;
    ::inet_pton(AF_INET, "192.0.2.1", &documentation.sin_addr);
    const bool refused =
        ::bind(other.get(), reinterpret_cast<const sockaddr*>(&documentation), sizeof documentation) != 0;
    const int error = errno;
    const bool filtered = std::string(bound) == "127.0.0.1" && refused && error == EPERM;
    Check check{"binding is loopback only", filtered || layer_state("bind_filter") == "fallback",
                std::string("0.0.0.0 bound as ") + bound + ", 192.0.2.1: " + (refused ? error_text(error) : "bound!")};
    check.fallback = !filtered && check.pass;
    if (check.fallback) check.detail += " (only loopback exists in the agent's network namespace)";
    return check;
}

// Last: if it succeeded the probe would be in the new namespace.
Check user_namespace_refused() {
    const bool refused = ::unshare(CLONE_NEWUSER) != 0;
    const int error = errno;
    return {"new user namespaces are refused", refused,
            refused ? error_text(error) : "made one: chroot and mounts in it could get around the unix socket list"};
}

Check not_root() {
    const uid_t uid = ::getuid();
    return {"the agent is not root", uid != 0,
            uid != 0 ? "uid " + std::to_string(uid) + ", gid " + std::to_string(::getgid())
                     : "uid 0: the gateway says run_as root; the agent owns root's files"};
}

int probe(pid_t outside, const std::string& canary_path, const std::string& canary_abstract,
          const std::string& launch_socket) {
    std::vector<Check> checks;
    for (const auto& [layer, state] : sandbox_layers()) {
        Check check{"layer " + layer, state != "fail", state};
        check.fallback = state == "fallback";
        checks.push_back(check);
    }
    if (checks.empty()) checks.push_back({"sandbox layers", false, "TAMEFLARE_SANDBOX is not set: not an agent?"});
    checks.push_back(not_root());
    checks.push_back({"no capabilities", status_field_is("CapEff", "0000000000000000"), "CapEff"});
    checks.push_back({"no_new_privs", status_field_is("NoNewPrivs", "1"), "NoNewPrivs"});
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(1);
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    checks.push_back(tcp_redirected("TCP goes to the proxy (IPv4)", AF_INET, v4, "127.0.0.1"));
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(1);
    v6.sin6_addr = in6addr_loopback;
    checks.push_back(tcp_redirected("TCP goes to the proxy (IPv6)", AF_INET6, v6, "::1"));
    checks.push_back(udp_refused());
    checks.push_back(dns_refused());
    checks.push_back(raw_refused());
    checks.push_back(cgroup_escape_refused());
    if (outside > 0) {
        checks.push_back(processes_hidden(outside));
        checks.push_back(ptrace_refused());
    }
    if (!canary_path.empty()) {
        checks.push_back(unix_connect_refused("unix sockets outside are refused", canary_path, "unix_socket_filter"));
    }
    if (!canary_abstract.empty()) {
        checks.push_back(
            unix_connect_refused("abstract unix sockets outside are refused", canary_abstract, "landlock_scopes"));
    }
    if (!launch_socket.empty()) {
        checks.push_back(
            unix_connect_refused("tameflared's sockets are unreachable", launch_socket, "unix_socket_filter"));
    }
    checks.push_back(bind_loopback_only());
    checks.push_back(user_namespace_refused());
    bool all = true;
    for (const auto& check : checks) {
        print(check);
        all = all && check.pass;
    }
    return all ? kExitOk : kExitFailed;
}

// A listening unix socket outside the agent that the probe must not reach: a path one in a fresh directory
// anyone may enter (so only the sandbox stands in the way), and an abstract one.
struct Canary {
    std::filesystem::path directory;
    std::string path;
    std::string abstract;
    UniqueFd path_listener;
    UniqueFd abstract_listener;

    Canary() {
        // Not in /tmp: the agent has its own, and the canary would be out of reach for the wrong reason.
        char pattern[] = "/dev/shm/tf-doctor-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) return;
        directory = pattern;
        ::chmod(pattern, 0755);
        path = (directory / "canary.sock").string();
        abstract = "@tameflare-doctor-" + std::to_string(::getpid());
        path_listener = listen_at(path);
        if (path_listener) ::chmod(path.c_str(), 0777);
        abstract_listener = listen_at(abstract);
    }
    ~Canary() {
        std::error_code ignored;
        if (!directory.empty()) std::filesystem::remove_all(directory, ignored);
    }
    Canary(const Canary&) = delete;
    Canary& operator=(const Canary&) = delete;

    static UniqueFd listen_at(const std::string& address) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        sockaddr_un at{};
        at.sun_family = AF_UNIX;
        const std::size_t length = std::min(address.size(), sizeof at.sun_path - 1);
        std::memcpy(at.sun_path, address.data(), length);
        const bool abstract = address.rfind('@', 0) == 0;
        if (abstract) at.sun_path[0] = '\0';
        const auto size = static_cast<socklen_t>(abstract ? offsetof(sockaddr_un, sun_path) + length : sizeof at);
        if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&at), size) != 0 || ::listen(fd.get(), 8) != 0) {
            return {};
        }
        return fd;
    }
    // Whether anything connected (a connection waits in the backlog).
    [[nodiscard]] static bool reached(const UniqueFd& listener) {
        if (!listener) return false;
        const UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        return static_cast<bool>(accepted);
    }
};

// The gateway's filesystem section as the daemon applied it to the probe: for an agent of yours, launched here.
void print_filesystem(const std::string& gateway, const nlohmann::json& view) {
    if (!view.is_object()) return;
    std::error_code error;
    std::printf("\nFilesystem of gateway %s, for an agent you launch from %s:\n", gateway.c_str(),
                std::filesystem::current_path(error).c_str());
    const auto list = [&](const char* title, const char* key, const char* empty) {
        std::printf("  %s:\n", title);
        const auto found = view.find(key);
        if (found == view.end() || !found->is_array() || found->empty()) {
            std::printf("    (%s)\n", empty);
            return;
        }
        // What exists here: the lists name many paths a given machine does not have.
        std::size_t absent = 0;
        for (const auto& path : *found) {
            if (!path.is_string()) continue;
            const std::string text = path.get<std::string>();
            if (std::filesystem::exists(text, error)) {
                std::printf("    %s\n", text.c_str());
            } else {
                ++absent;
            }
        }
        if (absent != 0) std::printf("    (and %zu more that do not exist here)\n", absent);
    };
    list("writable (everything else is read-only)", "write", "nothing but the private tmp directories");
    list("private, the agent's own", "private_tmp", "none: the host's /tmp and /var/tmp are shared");
    list("protected (read-only inside the writable places)", "protect", "nothing inside the writable places");
    list("pinned (cannot be renamed or removed)", "pins", "none");
    list("hidden (empty to the agent)", "hide", "none");
    std::fflush(stdout);
}

}  // namespace

int doctor_command(std::span<char*> args) {
    std::string gateway;
    std::string socket_path;
    std::string config_file;
    std::string isolation;
    bool inside = false;
    pid_t outside = 0;
    std::string canary_path;
    std::string canary_abstract;
    std::string launch_socket;
    enum { kGateway = 256, kSocket, kProbe, kIsolation, kOutside, kCanaryPath, kCanaryAbstract, kLaunchSocket };
    const option options[] = {
        {"gateway", required_argument, nullptr, kGateway},
        {"socket", required_argument, nullptr, kSocket},
        {"config", required_argument, nullptr, 'c'},
        {"isolation", required_argument, nullptr, kIsolation},
        {"probe", no_argument, nullptr, kProbe},
        // The probe's inputs, from the tf doctor outside.
        {"outside-pid", required_argument, nullptr, kOutside},
        {"canary-path", required_argument, nullptr, kCanaryPath},
        {"canary-abstract", required_argument, nullptr, kCanaryAbstract},
        {"launch-socket", required_argument, nullptr, kLaunchSocket},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    optind = 1;
    int c = 0;
    while ((c = getopt_long(static_cast<int>(args.size()), args.data(), "c:h", options, nullptr)) != -1) {
        switch (c) {
            case kGateway: gateway = optarg; break;
            case kSocket: socket_path = optarg; break;
            case 'c': config_file = optarg; break;
            case kIsolation: isolation = optarg; break;
            case kProbe: inside = true; break;
            case kOutside: outside = static_cast<pid_t>(std::atoi(optarg)); break;
            case kCanaryPath: canary_path = optarg; break;
            case kCanaryAbstract: canary_abstract = optarg; break;
            case kLaunchSocket: launch_socket = optarg; break;
            case 'h': std::fputs(kDoctorUsage, stdout); return kExitOk;
            default: std::fputs(kDoctorUsage, stderr); return kExitUsage;
        }
    }
    if (inside) return probe(outside, canary_path, canary_abstract, launch_socket);
    if (gateway.empty()) {
        std::fputs("tf doctor: --gateway is required (one you may launch agents on)\n", stderr);
        return kExitUsage;
    }
    std::error_code error;
    bool all = true;
    const auto report = [&](const Check& check) {
        print(check);
        all = all && check.pass;
        return check.pass;
    };
    report({"kernel BTF (/sys/kernel/btf/vmlinux)", std::filesystem::exists("/sys/kernel/btf/vmlinux", error), ""});
    const std::string path = launch_socket_path(socket_path, config_file);
    const bool reachable = connect_launch_socket(path, "doctor").has_value();  // prints why when not
    if (!report({"tameflared's launch socket", reachable, path})) {
        return kExitFailed;
    }
    const Canary canary;
    // The probe is this very program, run again as an agent of the gateway.
    const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
    std::vector<std::string> argv{"run", "--socket", path, "--gateway", gateway};
    if (!isolation.empty()) argv.insert(argv.end(), {"--isolation", isolation});
    argv.insert(argv.end(), {"--", self, "doctor", "--probe", "--outside-pid", std::to_string(::getpid()),
                             "--launch-socket", path});
    if (canary.path_listener) argv.insert(argv.end(), {"--canary-path", canary.path});
    if (canary.abstract_listener) argv.insert(argv.end(), {"--canary-abstract", canary.abstract});
    std::vector<char*> pointers(argv.size());
    std::transform(argv.begin(), argv.end(), pointers.begin(), [](std::string& arg) { return arg.data(); });
    std::fflush(stdout);
    nlohmann::json filesystem;
    const int status =
        run_command(std::span<char*>(pointers.data(), pointers.size()),
                    [&](const nlohmann::json& started) { filesystem = started.value("filesystem", nlohmann::json()); });
    if (status == 125) report({"a probe agent can be launched", false, "see the message above"});
    const bool reached = Canary::reached(canary.path_listener) || Canary::reached(canary.abstract_listener);
    if (status != 125) {
        report({"nothing outside was reached", !reached,
                reached ? "a unix socket canary of tf doctor got a connection" : "the canaries saw no connection"});
    }
    print_filesystem(gateway, filesystem);
    return all && status == kExitOk ? kExitOk : kExitFailed;
}

}  // namespace tameflare::cli
