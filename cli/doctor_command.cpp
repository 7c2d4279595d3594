// tf doctor: a self-test any user can run. It checks what the host offers,
// then launches a probe agent (tf itself, through tameflared) that tries the
// ways out and reports each enforcement property as PASS or FAIL.
#include "cli/commands.h"
#include "cli/launch_client.h"
#include "daemon/unique_fd.h"
#include "netns/cgroup.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace tameflare::cli {
namespace {

constexpr const char* kDoctorUsage = R"(Usage: tf doctor --gateway G [--socket PATH] [-c FILE]

Checks that kernel enforcement works here: the kernel's BTF and cgroup2, the
launch socket, and then, from inside a probe agent launched on gateway G (you
must be allowed to launch there), each enforcement property. Prints one line
per check, PASS or FAIL with the reason.

Exit status: 0 every check passed; 1 a check failed; 2 usage.
)";

struct Check {
    std::string name;
    bool pass = false;
    std::string detail;
};

void print(const Check& check) {
    std::printf("%s  %-44s %s\n", check.pass ? "PASS" : "FAIL", check.name.c_str(), check.detail.c_str());
    std::fflush(stdout);
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

int probe() {
    std::vector<Check> checks;
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
    bool all = true;
    for (const auto& check : checks) {
        print(check);
        all = all && check.pass;
    }
    return all ? kExitOk : kExitFailed;
}

}  // namespace

int doctor_command(std::span<char*> args) {
    std::string gateway;
    std::string socket_path;
    std::string config_file;
    bool inside = false;
    enum { kGateway = 256, kSocket, kProbe };
    const option options[] = {
        {"gateway", required_argument, nullptr, kGateway},
        {"socket", required_argument, nullptr, kSocket},
        {"config", required_argument, nullptr, 'c'},
        {"probe", no_argument, nullptr, kProbe},
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
            case kProbe: inside = true; break;
            case 'h': std::fputs(kDoctorUsage, stdout); return kExitOk;
            default: std::fputs(kDoctorUsage, stderr); return kExitUsage;
        }
    }
    if (inside) return probe();
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
    // The probe is this very program, run again as an agent of the gateway.
    const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
    std::vector<std::string> argv{"run", "--socket", path, "--gateway", gateway, "--", self, "doctor", "--probe"};
    std::vector<char*> pointers(argv.size());
    std::transform(argv.begin(), argv.end(), pointers.begin(), [](std::string& arg) { return arg.data(); });
    std::fflush(stdout);
    const int status = run_command(std::span<char*>(pointers.data(), pointers.size()));
    if (status == 125) report({"a probe agent can be launched", false, "see the message above"});
    return all && status == kExitOk ? kExitOk : kExitFailed;
}

}  // namespace tameflare::cli
