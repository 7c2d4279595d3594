// The BPF programs on the real kernel: a process placed in an agent cgroup
// tries every way out, and each one either lands on the agent's proxy or DNS
// listener or fails: connects, datagrams, binds and unix sockets; and
// nothing but loopback reaches its sockets (tried over a veth pair between
// two network namespaces the test makes). Needs root, BTF and cgroup2; skips
// with the reason otherwise (and the unix socket tests on kernels without
// those hooks).
#include "bpf/enforcer.h"
#include "bpf/origin_map.h"
#include "daemon/dataplane/confine.h"
#include "netns/cgroup.h"
#include "netns/namespaces.h"
#include "support/loopback.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace tameflare {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::atomic<int> sequence{0};

// What a child reports: a line of text through a pipe, and its exit code.
struct ChildResult {
    int status = -1;
    std::string output;
};

// Runs `fn` in a forked child that first moves itself into `cgroup`. The
// child's output is whatever `fn` returns. `while_running` runs in the parent
// meanwhile (to answer the child).
ChildResult run_in(const fs::path& cgroup, const std::function<std::string()>& fn,
                   const std::function<void()>& while_running = {}) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    const std::string procs = (cgroup / "cgroup.procs").string();
    const pid_t pid = fork();
    if (pid == 0) {
        ::close(pipe_fds[0]);
        const int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(90);
        ::close(fd);
        const std::string out = fn();
        if (::write(pipe_fds[1], out.data(), out.size()) < 0) _exit(91);
        _exit(0);
    }
    ::close(pipe_fds[1]);
    if (while_running) while_running();
    ChildResult result;
    char buffer[512];
    ssize_t n = 0;
    while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0)
        result.output.append(buffer, static_cast<std::size_t>(n));
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

std::string errno_name(int error) {
    return std::string("errno:") + strerrordesc_np(error);
}

sockaddr_in v4(const char* ip, int port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, ip, &address.sin_addr);
    return address;
}

sockaddr_in6 v6(const char* ip, int port) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET6, ip, &address.sin6_addr);
    return address;
}

std::string peer_text(int fd) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return errno_name(errno);
    char text[INET6_ADDRSTRLEN] = {};
    if (peer.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
    }
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
}

// connect() from a fresh socket that stays open in `kept`: "ok <peer>" or
// the errno (and `kept` empty).
template <class Address>
std::string connect_kept(int family, int type, const Address& address, UniqueFd& kept) {
    UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
    if (!fd) return errno_name(errno);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return errno_name(errno);
    }
    kept = std::move(fd);
    return "ok " + peer_text(kept.get());
}

// connect() from a fresh socket, closed again; "ok <peer>" or the errno.
template <class Address>
std::string try_connect(int family, int type, const Address& address) {
    UniqueFd closed_on_return;
    return connect_kept(family, type, address, closed_on_return);
}

// Keeps the agent's end of a redirected connection open until the proxy's
// end closes it. The test looks up the connection's origin after accepting
// it, and the agent's close removes that record (sock_ops, BPF_TCP_CLOSE):
// a child that closed first would make the look-up fail under load. Bounded,
// so that a test whose proxy side failed ends instead of hanging.
void hold_until_the_proxy_closes(int fd) {
    if (fd < 0) return;
    pollfd closed{fd, POLLIN, 0};
    if (::poll(&closed, 1, 10000) != 1) return;
    char byte = 0;
    (void)::read(fd, &byte, 1);
}

proxy::Endpoint peer_of(int fd) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length);
    proxy::Endpoint endpoint;
    if (peer.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
        endpoint.address.v4 = true;
        std::memcpy(endpoint.address.bytes.data(), &in->sin_addr, 4);
        endpoint.port = ntohs(in->sin_port);
    } else {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
        std::memcpy(endpoint.address.bytes.data(), &in6->sin6_addr, 16);
        endpoint.port = ntohs(in6->sin6_port);
    }
    return endpoint;
}

// The local address of a socket ("127.0.0.1:4242"; "[::1]:4242").
std::string local_text(int fd) {
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return errno_name(errno);
    char text[INET6_ADDRSTRLEN] = {};
    if (bound.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&bound);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
    }
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
}

// The port of a local address as local_text() writes it.
int port_of(const std::string& address) {
    return std::stoi(address.substr(address.rfind(':') + 1));
}

// The address a fresh socket of `family` and `type` gets when bound to
// `ip`:`port` ("127.0.0.1:4242"; "[::1]:4242"), or the errno.
std::string bind_text(int family, int type, const char* ip, int port = 0) {
    const UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
    if (!fd) return errno_name(errno);
    int result = 0;
    if (family == AF_INET) {
        const auto address = v4(ip, port);
        result = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
    } else {
        const auto address = v6(ip, port);
        result = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
    }
    if (result != 0) return errno_name(errno);
    return local_text(fd.get());
}

std::vector<std::string> split(const std::string& text, char separator = '|') {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t end = text.find(separator); end != std::string::npos; end = text.find(separator, start)) {
        parts.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    parts.push_back(text.substr(start));
    return parts;
}

// A port nothing uses right now on 127.0.0.1 and ::1.
int free_port() {
    const UniqueFd fd = netns::listen_tcp(*proxy::Endpoint::parse("127.0.0.1:0"));
    return netns::local_endpoint(fd.get()).port;
}

// A unix socket address: a path, or an abstract name when `name` starts
// with '@' (the rest, NULs included, is the name).
struct UnixAddress {
    sockaddr_un address{};
    socklen_t length = 0;
};

UnixAddress unix_address(const std::string& name) {
    UnixAddress out;
    out.address.sun_family = AF_UNIX;
    if (!name.empty() && name.front() == '@') {
        std::memcpy(out.address.sun_path + 1, name.data() + 1, name.size() - 1);
        out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    } else {
        std::memcpy(out.address.sun_path, name.data(), name.size());
        out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    }
    return out;
}

// A unix socket the test makes outside the agent's cgroup: listening
// (stream) or bound (datagram).
class UnixListener {
public:
    UnixListener(int type, const std::string& name) : type_(type), fd_(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0)) {
        const UnixAddress at = unix_address(name);
        if (!fd_ || ::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&at.address), at.length) != 0 ||
            (type == SOCK_STREAM && ::listen(fd_.get(), 16) != 0)) {
            throw std::runtime_error("cannot make the unix socket " + name + ": " + strerrordesc_np(errno));
        }
    }

    // Whether a connection or datagram arrived (and takes it).
    [[nodiscard]] bool reached(std::chrono::milliseconds wait = 100ms) const {
        pollfd ready{fd_.get(), POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(wait.count())) != 1) return false;
        if (type_ == SOCK_STREAM) {
            UniqueFd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        } else {
            char buffer[64];
            (void)::recv(fd_.get(), buffer, sizeof buffer, 0);
        }
        return true;
    }

private:
    int type_;
    UniqueFd fd_;
};

// A stream connect, or a datagram sent with sendto, to `name`: "ok" or the errno.
std::string try_unix(int type, const std::string& name) {
    const UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (!fd) return errno_name(errno);
    const UnixAddress to = unix_address(name);
    const auto* address = reinterpret_cast<const sockaddr*>(&to.address);
    const bool done = type == SOCK_STREAM ? ::connect(fd.get(), address, to.length) == 0
                                          : ::sendto(fd.get(), "x", 1, 0, address, to.length) == 1;
    return done ? "ok" : errno_name(errno);
}

// A line from a child of run_in to the test while both run, and the test's
// word back: the child says what it has set up, the test tries it from
// outside, then lets the child report what reached it. Both waits are
// bounded, so that a side that failed does not hang the other.
class Handshake {
public:
    Handshake() {
        int up[2];
        int down[2];
        if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) {
            throw std::runtime_error(std::string("cannot make the handshake's pipes: ") + strerrordesc_np(errno));
        }
        up_read_.reset(up[0]);
        up_write_.reset(up[1]);
        down_read_.reset(down[0]);
        down_write_.reset(down[1]);
    }

    // The child's side.
    void say(const std::string& line) const {
        const std::string text = line + "\n";
        if (::write(up_write_.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) _exit(92);
    }
    void await_go(std::chrono::milliseconds bound = 10s) const {
        pollfd go{down_read_.get(), POLLIN, 0};
        if (::poll(&go, 1, static_cast<int>(bound.count())) != 1) return;
        char byte = 0;
        (void)::read(down_read_.get(), &byte, 1);
    }

    // The test's side: the child's line ("" when it said nothing in time).
    [[nodiscard]] std::string hear(std::chrono::milliseconds bound = 10s) const {
        std::string line;
        const auto deadline = std::chrono::steady_clock::now() + bound;
        while (line.empty() || line.back() != '\n') {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd said{up_read_.get(), POLLIN, 0};
            if (left.count() <= 0 || ::poll(&said, 1, static_cast<int>(left.count())) != 1) return {};
            char byte = 0;
            if (::read(up_read_.get(), &byte, 1) != 1) return {};
            line += byte;
        }
        line.pop_back();
        return line;
    }
    void go() const { (void)::write(down_write_.get(), "g", 1); }

private:
    UniqueFd up_read_, up_write_, down_read_, down_write_;
};

// rtnetlink by hand (libnl is the netns library's private dependency): one
// request, built attribute by attribute.
class NetlinkRequest {
public:
    NetlinkRequest(std::uint16_t type, std::uint16_t flags) {
        nlmsghdr header{};
        header.nlmsg_type = type;
        header.nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
        header.nlmsg_seq = 1;
        append(&header, sizeof header);
    }

    template <class Fixed>
    void fixed(const Fixed& part) {  // the ifinfomsg or ifaddrmsg after the header
        append(&part, sizeof part);
    }
    void attribute(std::uint16_t type, const void* data, std::size_t size) {
        rtattr header{};
        header.rta_len = static_cast<std::uint16_t>(RTA_LENGTH(size));
        header.rta_type = type;
        append(&header, sizeof header);
        append(data, size);
    }
    void attribute(std::uint16_t type, const std::string& text) { attribute(type, text.c_str(), text.size() + 1); }
    // A nested attribute: what is added until close() is inside it.
    std::size_t open(std::uint16_t type) {
        const std::size_t at = bytes_.size();
        attribute(type, nullptr, 0);
        return at;
    }
    void close(std::size_t at) { patch_length<rtattr>(at, bytes_.size() - at); }

    // Sends the request and waits for the kernel's answer; throws with its errno.
    void send(const std::string& what) {
        patch_length<nlmsghdr>(0, bytes_.size());
        const UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
        const timeval bound{5, 0};
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound) != 0 ||
            ::sendto(fd.get(), bytes_.data(), bytes_.size(), 0, reinterpret_cast<const sockaddr*>(&kernel),
                     sizeof kernel) < 0) {
            throw std::system_error(errno, std::generic_category(), what);
        }
        std::array<char, 4096> answer{};
        const ssize_t n = ::recv(fd.get(), answer.data(), answer.size(), 0);
        if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) {
            throw std::system_error(n < 0 ? errno : EPROTO, std::generic_category(), what + " (no answer)");
        }
        nlmsghdr header{};
        std::memcpy(&header, answer.data(), sizeof header);
        nlmsgerr error{};
        std::memcpy(&error, answer.data() + NLMSG_HDRLEN, sizeof error);
        if (header.nlmsg_type != NLMSG_ERROR) throw std::system_error(EPROTO, std::generic_category(), what);
        if (error.error != 0) throw std::system_error(-error.error, std::generic_category(), what);
    }

private:
    void append(const void* data, std::size_t size) {
        const auto* bytes = static_cast<const char*>(data);
        if (size > 0) bytes_.insert(bytes_.end(), bytes, bytes + size);
        bytes_.resize(NLMSG_ALIGN(bytes_.size()));
    }
    // Sets the length field of the nlmsghdr or rtattr at `at`.
    template <class Header>
    void patch_length(std::size_t at, std::size_t length) {
        Header header{};
        std::memcpy(&header, bytes_.data() + at, sizeof header);
        if constexpr (std::is_same_v<Header, nlmsghdr>) {
            header.nlmsg_len = static_cast<std::uint32_t>(length);
        } else {
            header.rta_len = static_cast<std::uint16_t>(length);
        }
        std::memcpy(bytes_.data() + at, &header, sizeof header);
    }

    std::vector<char> bytes_;
};

// Brings the interface `name` of the calling thread's network namespace up
// with the IPv4 address `ip`/24.
void configure_interface(const std::string& name, const char* ip) {
    const auto index = static_cast<int>(::if_nametoindex(name.c_str()));
    if (index == 0) throw std::system_error(errno, std::generic_category(), "no interface " + name);
    NetlinkRequest up(RTM_NEWLINK, 0);
    ifinfomsg link{};
    link.ifi_index = index;
    link.ifi_flags = IFF_UP;
    link.ifi_change = IFF_UP;
    up.fixed(link);
    up.send("cannot bring " + name + " up");

    NetlinkRequest address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    ifaddrmsg header{};
    header.ifa_family = AF_INET;
    header.ifa_prefixlen = 24;
    header.ifa_scope = RT_SCOPE_UNIVERSE;
    header.ifa_index = static_cast<std::uint32_t>(index);
    address.fixed(header);
    in_addr value{};
    inet_pton(AF_INET, ip, &value);
    address.attribute(IFA_LOCAL, &value, sizeof value);
    address.attribute(IFA_ADDRESS, &value, sizeof value);
    address.send(std::string("cannot give ") + name + " the address " + ip);
}

// Two network namespaces of the test's own, joined by a veth pair: `inside`,
// where the agent's process goes, with 192.0.2.1, and `outside`, another
// machine on its network, with 192.0.2.2 (TEST-NET-1, in these namespaces
// only). Nothing of the host's network is touched; both go away with the
// last process and file descriptor in them.
struct VethNetwork {
    static constexpr const char* inside_ip = "192.0.2.1";
    static constexpr const char* outside_ip = "192.0.2.2";

    netns::NetworkNamespace inside = netns::NetworkNamespace::create();
    netns::NetworkNamespace outside = netns::NetworkNamespace::create();

    // Throws std::system_error; EOPNOTSUPP when the kernel has no veth.
    VethNetwork() {
        inside.run_inside([this] {
            NetlinkRequest veth(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
            veth.fixed(ifinfomsg{});
            veth.attribute(IFLA_IFNAME, std::string("tf-inside"));
            const auto info = veth.open(IFLA_LINKINFO);
            veth.attribute(IFLA_INFO_KIND, std::string("veth"));
            const auto data = veth.open(IFLA_INFO_DATA);
            const auto peer = veth.open(VETH_INFO_PEER);
            veth.fixed(ifinfomsg{});  // the peer's own link message
            veth.attribute(IFLA_IFNAME, std::string("tf-outside"));
            const std::uint32_t outside_fd = static_cast<std::uint32_t>(outside.fd());
            veth.attribute(IFLA_NET_NS_FD, &outside_fd, sizeof outside_fd);
            veth.close(peer);
            veth.close(data);
            veth.close(info);
            veth.send("cannot make a veth pair");
            configure_interface("tf-inside", inside_ip);
        });
        outside.run_inside([] { configure_interface("tf-outside", outside_ip); });
    }
};

// A TCP connect from the calling thread's network namespace: "ok", "no
// answer" when nothing came back within `bound` (a dropped SYN), or the errno.
std::string connect_within(const char* ip, int port, std::chrono::milliseconds bound = 1500ms) {
    const UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const auto to = v4(ip, port);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) return "ok";
    if (errno != EINPROGRESS) return errno_name(errno);
    pollfd done{fd.get(), POLLOUT, 0};
    if (::poll(&done, 1, static_cast<int>(bound.count())) != 1) return "no answer";
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length);
    return error == 0 ? "ok" : errno_name(error);
}

// A datagram from the calling thread's network namespace.
void send_datagram(const char* ip, int port, const std::string& text) {
    const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    const auto to = v4(ip, port);
    ::sendto(fd.get(), text.data(), text.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
}

// What reached the sockets of a process: "tcp from <peer address>" per
// connection to one of `listeners` and "udp <text> from <address>" per
// datagram on `datagrams`, sorted; it waits up to `quiet` for each next one.
std::string arrivals(const std::vector<int>& listeners, int datagrams, std::chrono::milliseconds quiet = 500ms) {
    std::vector<pollfd> ready;
    ready.reserve(listeners.size() + 1);
    for (const int fd : listeners) ready.push_back({fd, POLLIN, 0});
    ready.push_back({datagrams, POLLIN, 0});
    std::vector<std::string> seen;
    while (::poll(ready.data(), ready.size(), static_cast<int>(quiet.count())) > 0) {
        for (std::size_t i = 0; i + 1 < ready.size(); ++i) {
            if ((ready[i].revents & POLLIN) == 0) continue;
            const UniqueFd connection(::accept4(ready[i].fd, nullptr, nullptr, SOCK_CLOEXEC));
            const std::string peer = connection ? peer_text(connection.get()) : errno_name(errno);
            seen.push_back("tcp from " + peer.substr(0, peer.rfind(':')));
        }
        if ((ready.back().revents & POLLIN) != 0) {
            std::array<char, 64> text{};
            sockaddr_in from{};
            socklen_t length = sizeof from;
            const auto n =
                ::recvfrom(datagrams, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&from), &length);
            std::array<char, INET_ADDRSTRLEN> address{};
            inet_ntop(AF_INET, &from.sin_addr, address.data(), address.size());
            seen.push_back("udp " + std::string(text.data(), n > 0 ? static_cast<std::size_t>(n) : 0) + " from " +
                           address.data());
        }
    }
    std::sort(seen.begin(), seen.end());
    std::string out;
    for (const auto& one : seen) out += (out.empty() ? "" : "|") + one;
    return out;
}

// A process of `cgroup` in `network`'s inside namespace that listens and
// sends without ever calling bind(2), tried from the outside namespace (over
// the veth) and from inside (over loopback) while it waits.
struct UnboundSockets {
    std::string bound;             // what the kernel bound them to: "<tcp> <tcp6> <udp>"
    std::string from_outside;      // connects to tcp|tcp6|a listener of the test's beside them
    std::string control_datagram;  // whether a datagram to a socket of the test's crossed the veth
    std::string from_inside;       // connects to tcp at 127.0.0.1|tcp at 192.0.2.1|tcp6 at 127.0.0.1
    std::string arrivals;          // what the process's sockets got (arrivals())
};

UnboundSockets try_unbound_sockets(const fs::path& cgroup, const VethNetwork& network) {
    UnboundSockets out;
    const Handshake handshake;
    const auto result = run_in(
        cgroup,
        [&] {
            if (::setns(network.inside.fd(), CLONE_NEWNET) != 0) return errno_name(errno);
            // Never bound: listen() and sendto() bind the any-address themselves, and no bind hook sees it.
            const UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            const UniqueFd listener6(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));  // dual-stack: IPv4 too
            const UniqueFd datagrams(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
            if (!listener || !listener6 || !datagrams || ::listen(listener.get(), 8) != 0 ||
                ::listen(listener6.get(), 8) != 0) {
                return errno_name(errno);
            }
            // To the DNS stub (nothing listens on its port in this namespace), or refused without a
            // registration: the kernel binds the socket before the sendmsg hook runs, either way.
            const auto stub = v4("127.0.0.53", 53);
            (void)::sendto(datagrams.get(), "q", 1, 0, reinterpret_cast<const sockaddr*>(&stub), sizeof stub);
            handshake.say(local_text(listener.get()) + " " + local_text(listener6.get()) + " " +
                          local_text(datagrams.get()));
            handshake.await_go();
            return arrivals({listener.get(), listener6.get()}, datagrams.get());
        },
        [&] {
            out.bound = handshake.hear();
            const auto said = split(out.bound, ' ');
            if (said.size() != 3) return;  // the child failed; its output says why
            const int tcp = port_of(said[0]);
            const int tcp6 = port_of(said[1]);
            const int udp = port_of(said[2]);
            // The test's own sockets beside the child's, outside the agents' subtree: they show the veth
            // carries packets, so that what the child's sockets do not get was dropped by the filter.
            const UniqueFd control = network.inside.listen_tcp(*proxy::Endpoint::parse("0.0.0.0:0"));
            const UniqueFd control_udp = network.inside.bind_udp(*proxy::Endpoint::parse("0.0.0.0:0"));
            const int control_port = netns::local_endpoint(control.get()).port;
            const int control_udp_port = netns::local_endpoint(control_udp.get()).port;
            const char* agent_ip = VethNetwork::inside_ip;
            out.from_outside = network.outside.run_inside([&] {
                std::string probes = connect_within(agent_ip, tcp) + "|" + connect_within(agent_ip, tcp6) + "|" +
                                     connect_within(agent_ip, control_port);
                send_datagram(agent_ip, udp, "outside");
                send_datagram(agent_ip, control_udp_port, "control");
                return probes;
            });
            // The control datagram went after the child's over the same veth: once it is there, the child's
            // has been delivered or dropped.
            pollfd arrived{control_udp.get(), POLLIN, 0};
            out.control_datagram = ::poll(&arrived, 1, 2000) == 1 ? "arrived" : "lost";
            // 192.0.2.1 from inside its own namespace: a local address, delivered over loopback.
            out.from_inside = network.inside.run_inside([&] {
                std::string probes = connect_within("127.0.0.1", tcp) + "|" + connect_within(agent_ip, tcp) + "|" +
                                     connect_within("127.0.0.1", tcp6);
                send_datagram("127.0.0.1", udp, "loopback");
                return probes;
            });
            handshake.go();
        });
    out.arrivals = result.output;
    return out;
}

// Whether this kernel has the unix socket hooks, asked of its BTF (not of
// the Enforcer, whose own answer is under test).
bool kernel_has_unix_hooks() {
    std::ifstream btf("/sys/kernel/btf/vmlinux", std::ios::binary);
    const std::string content((std::istreambuf_iterator<char>(btf)), std::istreambuf_iterator<char>());
    return content.find("BPF_CGROUP_UNIX_CONNECT") != std::string::npos;
}

class EnforcerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (const std::string reason = bpf::unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
        const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(sequence++);
        root_ = netns::cgroup2_mount() / ("tf-bpf-test-" + tag);
        netns::ensure_cgroup(root_ / "agents");
        pins_ = fs::path("/sys/fs/bpf") / ("tf-bpf-test-" + tag);
        enforcer_.emplace(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});
        enforcer_->enforce(root_ / "agents");
        agent_.emplace(netns::Cgroup::create(root_ / "agents", "agent-1"));
        dns_udp_ = netns::bind_udp(*proxy::Endpoint::parse("127.0.0.1:0"));
        route_.proxy_port = static_cast<std::uint16_t>(proxy_.port());
        route_.dns_udp_port = netns::local_endpoint(dns_udp_.get()).port;
        route_.dns_tcp_port = static_cast<std::uint16_t>(dns_tcp_.port());
        enforcer_->add_agent(agent_->id(), route_);
    }

    void TearDown() override {
        if (!enforcer_) return;
        if (agent_) agent_->remove(5s);
        enforcer_->release(root_ / "agents");
        enforcer_.reset();
        std::error_code ignored;
        fs::remove_all(pins_, ignored);
        auto rest = netns::Cgroup::open(root_);
        rest.remove(5s);
    }

    fs::path root_;
    fs::path pins_;
    std::optional<bpf::Enforcer> enforcer_;
    std::optional<netns::Cgroup> agent_;
    testing::LoopbackListener proxy_;
    testing::LoopbackListener dns_tcp_;
    testing::LoopbackListener canary_;
    UniqueFd dns_udp_;
    bpf::AgentRoute route_;
};

TEST_F(EnforcerTest, TcpConnectsGoToTheProxyWhichLearnsTheOriginalDestination) {
    const auto target = v4("127.0.0.1", canary_.port());
    std::optional<bpf::Origin> origin;
    std::string peer_seen_by_proxy;
    const auto result = run_in(
        agent_->path(),
        [&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
                return errno_name(errno);
            }
            std::string out = "ok " + peer_text(fd);
            hold_until_the_proxy_closes(fd);
            return out;
        },
        [&] {
            const UniqueFd accepted(proxy_.accept(5s));
            ASSERT_TRUE(accepted);
            origin = enforcer_->origin(netns::socket_netns_cookie(accepted.get()), peer_of(accepted.get()));
        });
    EXPECT_EQ(result.output, "ok 127.0.0.1:" + canary_.port_text());
    ASSERT_TRUE(origin);
    EXPECT_EQ(origin->destination.to_string(), "127.0.0.1:" + canary_.port_text());
    EXPECT_EQ(origin->agent, agent_->id());
    EXPECT_EQ(canary_.accept(100ms), -1) << "the canary saw a connection";
    EXPECT_GE(enforcer_->counters().tcp_redirected, 1U);
}

// The unprivileged data plane's look-up (issue 24): a read-only descriptor of
// the map, used by a process confined exactly as the data plane is (its own
// user, no capability, its seccomp allow-list and Landlock domain).
TEST_F(EnforcerTest, TheDataPlaneLooksUpTheOriginThroughAReadOnlyDescriptorWithNoCapability) {
    const auto target = v4("127.0.0.1", canary_.port());
    std::string seen;
    const auto result = run_in(
        agent_->path(),
        [&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
                return errno_name(errno);
            }
            hold_until_the_proxy_closes(fd);
            return std::string("ok");
        },
        [&] {
            const UniqueFd accepted(proxy_.accept(5s));
            ASSERT_TRUE(accepted);
            const auto cookie = netns::socket_netns_cookie(accepted.get());
            const auto peer = peer_of(accepted.get());
            bpf::OriginMap map(enforcer_->origin_map_readonly());
            int report[2];
            ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
            const pid_t child = ::fork();
            if (child == 0) {
                const char* step = "";
                std::string text;
                if (dataplane::drop_privileges(65534, 65534, step) != 0) {
                    text = std::string("drop_privileges failed at ") + step;
                } else {
                    dataplane::confine_self({});
                    const auto origin = map.lookup(cookie, peer);
                    text = std::string(map.lookups_permitted() ? "permitted " : "refused ") +
                           (origin ? origin->destination.to_string() + " " + std::to_string(origin->agent) : "none");
                    // Writing through it: refused (the descriptor is read-only, and
                    // the allow-list has no BPF command but the look-up).
                    std::uint8_t key[64] = {};
                    std::uint8_t value[64] = {};
                    const int update = bpf_map_update_elem(map.fd(), key, value, BPF_ANY);
                    text += update == 0 ? " updated" : std::string(" update:") + errno_name(errno);
                }
                (void)!::write(report[1], text.data(), text.size());
                ::_exit(0);
            }
            ::close(report[1]);
            char buffer[512];
            for (ssize_t n = 0; (n = ::read(report[0], buffer, sizeof buffer)) > 0;) seen.append(buffer, n);
            ::close(report[0]);
            ::waitpid(child, nullptr, 0);
        });
    EXPECT_EQ(result.output, "ok");
    // This kernel lets a process with no capability look up through the
    // descriptor (6.5 and later); on older ones the data plane asks the
    // supervisor instead, and only the refusal of writes is checked.
    if (seen.starts_with("refused")) {
        std::cout << "this kernel refuses map look-ups without CAP_BPF: the data plane asks over its channel\n";
        EXPECT_EQ(seen, "refused none update:" + errno_name(EPERM));
        return;
    }
    EXPECT_EQ(seen, "permitted 127.0.0.1:" + canary_.port_text() + " " + std::to_string(agent_->id()) +
                        " update:" + errno_name(EPERM));
}

TEST_F(EnforcerTest, Ipv6AndMappedConnectsGoToTheProxy) {
    const UniqueFd canary6 = netns::listen_tcp(*proxy::Endpoint::parse("[::1]:0"));
    const auto port6 = netns::local_endpoint(canary6.get()).port;
    const auto native = v6("::1", port6);
    const auto mapped = v6("::ffff:127.0.0.1", canary_.port());
    std::vector<std::string> origins;
    const auto result = run_in(
        agent_->path(),
        [&] {
            UniqueFd native_fd;
            UniqueFd mapped_fd;
            std::string out = connect_kept(AF_INET6, SOCK_STREAM, native, native_fd) + "|" +
                              connect_kept(AF_INET6, SOCK_STREAM, mapped, mapped_fd);
            hold_until_the_proxy_closes(native_fd.get());
            hold_until_the_proxy_closes(mapped_fd.get());
            return out;
        },
        [&] {
            for (int i = 0; i < 2; ++i) {
                const UniqueFd accepted(proxy_.accept(5s));
                ASSERT_TRUE(accepted);
                const auto origin =
                    enforcer_->origin(netns::socket_netns_cookie(accepted.get()), peer_of(accepted.get()));
                origins.push_back(origin ? origin->destination.to_string() : "none");
            }
        });
    EXPECT_EQ(result.output, "ok [::1]:" + std::to_string(port6) + "|ok [::ffff:127.0.0.1]:" + canary_.port_text());
    std::sort(origins.begin(), origins.end());  // the two may be accepted in either order
    std::vector<std::string> expected{"[::1]:" + std::to_string(port6), "127.0.0.1:" + canary_.port_text()};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(origins, expected);
    pollfd p{canary6.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 100), 0) << "the IPv6 canary saw a connection";
    EXPECT_EQ(canary_.accept(100ms), -1) << "the canary saw a connection";
}

TEST_F(EnforcerTest, UdpIsRefusedExceptDnsWhichReachesTheStubAndSeemsToComeFromTheServer) {
    const UniqueFd canary_udp = netns::bind_udp(*proxy::Endpoint::parse("127.0.0.1:0"));
    const auto canary_port = netns::local_endpoint(canary_udp.get()).port;
    const auto canary = v4("127.0.0.1", canary_port);
    const auto resolver = v4("127.0.0.2", 53);
    const auto result = run_in(
        agent_->path(),
        [&] {
            std::string out;
            const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            out += ::sendto(fd, "x", 1, 0, reinterpret_cast<const sockaddr*>(&canary), sizeof canary) < 0
                       ? errno_name(errno)
                       : "sent";
            out += "|" + try_connect(AF_INET, SOCK_DGRAM, canary);
            if (::sendto(fd, "query", 5, 0, reinterpret_cast<const sockaddr*>(&resolver), sizeof resolver) < 0) {
                return out + "|" + errno_name(errno);
            }
            char reply[64] = {};
            sockaddr_in from{};
            socklen_t length = sizeof from;
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 5000) != 1) return out + "|no reply";
            const auto n = ::recvfrom(fd, reply, sizeof reply, 0, reinterpret_cast<sockaddr*>(&from), &length);
            char text[INET_ADDRSTRLEN] = {};
            inet_ntop(AF_INET, &from.sin_addr, text, sizeof text);
            return out + "|" + std::string(reply, static_cast<std::size_t>(n)) + " from " + text + ":" +
                   std::to_string(ntohs(from.sin_port));
        },
        [&] {
            pollfd p{dns_udp_.get(), POLLIN, 0};
            ASSERT_EQ(::poll(&p, 1, 5000), 1);
            char query[64] = {};
            sockaddr_in from{};
            socklen_t length = sizeof from;
            const auto n =
                ::recvfrom(dns_udp_.get(), query, sizeof query, 0, reinterpret_cast<sockaddr*>(&from), &length);
            ASSERT_EQ(std::string(query, static_cast<std::size_t>(n)), "query");
            ::sendto(dns_udp_.get(), "answer", 6, 0, reinterpret_cast<const sockaddr*>(&from), length);
        });
    EXPECT_EQ(result.output, errno_name(EPERM) + "|" + errno_name(EPERM) + "|answer from 127.0.0.2:53");
    pollfd p{canary_udp.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 100), 0) << "the UDP canary got a datagram";
    EXPECT_GE(enforcer_->counters().refused_udp, 2U);
}

TEST_F(EnforcerTest, DnsOverTcpGoesToTheStubsTcpListener) {
    const auto resolver = v4("127.0.0.3", 53);
    const auto result = run_in(agent_->path(), [&] { return try_connect(AF_INET, SOCK_STREAM, resolver); });
    EXPECT_EQ(result.output, "ok 127.0.0.3:53");
    const UniqueFd accepted(dns_tcp_.accept(2s));
    EXPECT_TRUE(accepted);
    EXPECT_EQ(proxy_.accept(100ms), -1);
}

// Packet sockets (AF_PACKET) never reach this hook: they need CAP_NET_RAW,
// which agents do not have (the agent tests check that).
TEST_F(EnforcerTest, OnlyTcpAndUdpSocketsCanBeCreated) {
    const auto result = run_in(agent_->path(), [] {
        struct Kind {
            const char* name;
            int family, type, protocol;
        };
        const Kind kinds[] = {
            {"tcp", AF_INET, SOCK_STREAM, 0},
            {"udp6", AF_INET6, SOCK_DGRAM, 0},
            {"raw", AF_INET, SOCK_RAW, IPPROTO_RAW},
            {"raw-icmp", AF_INET, SOCK_RAW, IPPROTO_ICMP},
            {"ping", AF_INET, SOCK_DGRAM, IPPROTO_ICMP},
            {"ping6", AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6},
            {"raw6", AF_INET6, SOCK_RAW, IPPROTO_RAW},
            {"sctp", AF_INET, SOCK_STREAM, IPPROTO_SCTP},
            {"sctp-seq", AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP},
            {"mptcp", AF_INET, SOCK_STREAM, 262},
            {"udplite", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE},
            {"dccp", AF_INET, SOCK_DCCP, IPPROTO_DCCP},
        };
        std::string out;
        for (const auto& kind : kinds) {
            const int fd = ::socket(kind.family, kind.type | SOCK_CLOEXEC, kind.protocol);
            out += std::string(kind.name) + "=" + (fd >= 0 ? "created" : "refused") + " ";
            if (fd >= 0) ::close(fd);
        }
        return out;
    });
    EXPECT_EQ(result.output,
              "tcp=created udp6=created raw=refused raw-icmp=refused ping=refused ping6=refused raw6=refused "
              "sctp=refused sctp-seq=refused mptcp=refused udplite=refused dccp=refused ");
}

TEST_F(EnforcerTest, ACgroupWithoutRegistrationCannotConnectAtAll) {
    auto stray = netns::Cgroup::create(root_ / "agents", "stray");
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(stray.path(), [&] { return try_connect(AF_INET, SOCK_STREAM, target); });
    EXPECT_EQ(result.output, errno_name(EPERM));
    EXPECT_EQ(canary_.accept(100ms), -1);
    EXPECT_EQ(proxy_.accept(100ms), -1);
    stray.remove(5s);
}

TEST_F(EnforcerTest, TcpFastOpenAndIoUringConnectsAreRedirectedToo) {
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(
        agent_->path(),
        [&] {
            std::string out;
            const int tfo = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            out += ::sendto(tfo, "GET", 3, MSG_FASTOPEN, reinterpret_cast<const sockaddr*>(&target), sizeof target) == 3
                       ? "tfo sent"
                       : errno_name(errno);
            io_uring ring{};
            if (io_uring_queue_init(4, &ring, 0) != 0) return out + "|io_uring unavailable";
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&target), sizeof target);
            io_uring_submit(&ring);
            io_uring_cqe* cqe = nullptr;
            io_uring_wait_cqe(&ring, &cqe);
            out += cqe->res == 0 ? "|uring ok " + peer_text(fd) : "|" + errno_name(-cqe->res);
            io_uring_cqe_seen(&ring, cqe);
            io_uring_queue_exit(&ring);
            hold_until_the_proxy_closes(tfo);
            hold_until_the_proxy_closes(fd);
            return out;
        },
        [&] {
            for (int i = 0; i < 2; ++i) {
                const UniqueFd accepted(proxy_.accept(5s));
                ASSERT_TRUE(accepted);
                const auto origin =
                    enforcer_->origin(netns::socket_netns_cookie(accepted.get()), peer_of(accepted.get()));
                ASSERT_TRUE(origin);
                EXPECT_EQ(origin->destination.port, canary_.port());
            }
        });
    EXPECT_EQ(result.output, "tfo sent|uring ok 127.0.0.1:" + canary_.port_text());
    EXPECT_EQ(canary_.accept(100ms), -1) << "the canary saw a connection";
}

TEST_F(EnforcerTest, ANewNetworkNamespaceInsideTheAgentReachesNothing) {
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(agent_->path(), [&] {
        if (::unshare(CLONE_NEWNET) != 0) return errno_name(errno);
        return try_connect(AF_INET, SOCK_STREAM, target);
    });
    // Redirected to 127.0.0.1:<proxy port> of the new namespace, where nothing listens (and lo is down).
    EXPECT_NE(result.output.rfind("errno:", 0), std::string::npos) << result.output;
    EXPECT_EQ(canary_.accept(100ms), -1);
}

TEST_F(EnforcerTest, PinnedLinksKeepEnforcingWithoutTheDaemonAndAreReadopted) {
    enforcer_.reset();  // the daemon is gone: nothing in user space holds the programs
    const auto target = v4("127.0.0.1", canary_.port());
    auto result = run_in(agent_->path(), [&] { return try_connect(AF_INET, SOCK_STREAM, target); });
    EXPECT_EQ(result.output, "ok 127.0.0.1:" + canary_.port_text());
    EXPECT_EQ(canary_.accept(100ms), -1) << "a connect escaped while no daemon ran";
    UniqueFd first(proxy_.accept(2s));
    EXPECT_TRUE(first);

    enforcer_.emplace(
        bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});  // restart: re-adopt maps, update links
    EXPECT_EQ(enforcer_->agents().at(agent_->id()), route_);
    EXPECT_EQ(enforcer_->enforced().size(), 1U);
    std::optional<bpf::Origin> origin;
    result = run_in(
        agent_->path(),
        [&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) return errno_name(errno);
            hold_until_the_proxy_closes(fd);
            return std::string("ok");
        },
        [&] {
            const UniqueFd accepted(proxy_.accept(5s));
            ASSERT_TRUE(accepted);
            origin = enforcer_->origin(netns::socket_netns_cookie(accepted.get()), peer_of(accepted.get()));
        });
    EXPECT_EQ(result.output, "ok");
    ASSERT_TRUE(origin);
    EXPECT_EQ(origin->destination.port, canary_.port());
}

// systemd removes a stopped unit's cgroup, agents/ subtree and all: the
// links pinned for it are severed. The next daemon forgets them and enforces
// the cgroup made again under that name with fresh links.
TEST_F(EnforcerTest, LinksOfACgroupThatIsGoneAreForgottenAndItsSuccessorEnforced) {
    agent_->remove(5s);
    agent_.reset();
    enforcer_.reset();
    const auto old_links = pins_ / "links" / std::to_string(netns::cgroup_id(root_ / "agents"));
    ASSERT_TRUE(fs::exists(old_links));
    auto agents = netns::Cgroup::open(root_ / "agents");
    agents.remove(5s);
    // The kernel severs the links once the cgroup is released, a moment after rmdir.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (fs::exists(old_links) && std::chrono::steady_clock::now() < deadline) {
        enforcer_.emplace(
            bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});  // a restart: never refuses over a severed link
        enforcer_.reset();
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_FALSE(fs::exists(old_links)) << "the severed links are still pinned";

    netns::ensure_cgroup(root_ / "agents");
    enforcer_.emplace(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});
    enforcer_->enforce(root_ / "agents");
    agent_.emplace(netns::Cgroup::create(root_ / "agents", "agent-1"));
    enforcer_->add_agent(agent_->id(), route_);
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(agent_->path(), [&] { return try_connect(AF_INET, SOCK_STREAM, target); });
    EXPECT_EQ(result.output, "ok 127.0.0.1:" + canary_.port_text());
    EXPECT_EQ(canary_.accept(100ms), -1) << "a connect of the new cgroup escaped";
    EXPECT_TRUE(UniqueFd(proxy_.accept(2s)));
}

TEST_F(EnforcerTest, WithTheProxyListenerClosedConnectsAreRefused) {
    route_.proxy_port = static_cast<std::uint16_t>(canary_.port() == 1 ? 2 : 1);  // nothing listens there
    enforcer_->add_agent(agent_->id(), route_);
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(agent_->path(), [&] { return try_connect(AF_INET, SOCK_STREAM, target); });
    EXPECT_EQ(result.output, errno_name(ECONNREFUSED));
    EXPECT_EQ(canary_.accept(100ms), -1);
}

TEST_F(EnforcerTest, OriginsAreExactUnderTupleReuseAndRemovedWhenConnectionsClose) {
    testing::LoopbackListener other;
    constexpr int rounds = 200;
    int correct = 0;
    const auto result = run_in(
        agent_->path(),
        [&] {
            for (int i = 0; i < rounds; ++i) {
                const auto target = v4("127.0.0.1", i % 2 == 0 ? canary_.port() : other.port());
                const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
                    return errno_name(errno);
                }
                hold_until_the_proxy_closes(fd);  // the proxy closes first
                ::close(fd);
            }
            return std::string("ok");
        },
        [&] {
            for (int i = 0; i < rounds; ++i) {
                const UniqueFd accepted(proxy_.accept(5s));
                if (!accepted) return;
                const auto origin =
                    enforcer_->origin(netns::socket_netns_cookie(accepted.get()), peer_of(accepted.get()));
                const int expected = i % 2 == 0 ? canary_.port() : other.port();
                if (origin && origin->destination.port == expected) ++correct;
            }
        });
    EXPECT_EQ(result.output, "ok");
    EXPECT_EQ(correct, rounds);
    EXPECT_EQ(enforcer_->counters().origin_full, 0U);
}

TEST_F(EnforcerTest, BindsToTheAnyAddressListenOnLoopbackAndLoopbackBindsStayAsGiven) {
    const int port = free_port();
    const auto result = run_in(agent_->path(), [&] {
        std::string out;
        for (const auto& [family, type, ip, at] : {
                 std::tuple{AF_INET, SOCK_STREAM, "0.0.0.0", port},
                 std::tuple{AF_INET6, SOCK_STREAM, "::", port},
                 std::tuple{AF_INET6, SOCK_STREAM, "::ffff:0.0.0.0", 0},
                 std::tuple{AF_INET, SOCK_DGRAM, "0.0.0.0", port},
                 std::tuple{AF_INET6, SOCK_DGRAM, "::", 0},
                 std::tuple{AF_INET, SOCK_STREAM, "127.0.0.5", port},
                 std::tuple{AF_INET6, SOCK_STREAM, "::1", 0},
                 std::tuple{AF_INET6, SOCK_STREAM, "::ffff:127.0.0.9", 0},
             }) {
            std::string bound = bind_text(family, type, ip, at);
            if (at == 0 && bound.rfind("errno:", 0) != 0) bound = bound.substr(0, bound.rfind(':')) + ":any";
            out += bound + " ";
        }
        return out;
    });
    const std::string p = std::to_string(port);
    EXPECT_EQ(result.output, "127.0.0.1:" + p + " [::1]:" + p + " [::ffff:127.0.0.1]:any 127.0.0.1:" + p +
                                 " [::1]:any 127.0.0.5:" + p + " [::1]:any [::ffff:127.0.0.9]:any ");
}

TEST_F(EnforcerTest, BindsToOtherAddressesAreRefusedByTheHookNotTheKernel) {
    const char* v4_other = "192.0.2.1";  // TEST-NET-1: on no interface here, no traffic is sent
    const char* v6_other = "2001:db8::1";
    const char* mapped_other = "::ffff:192.0.2.1";
    // Outside the agent the kernel itself refuses, with another error.
    const std::string outside = bind_text(AF_INET, SOCK_STREAM, v4_other) + "|" +
                                bind_text(AF_INET6, SOCK_STREAM, v6_other) + "|" +
                                bind_text(AF_INET6, SOCK_DGRAM, mapped_other);
    const auto not_available = errno_name(EADDRNOTAVAIL);
    EXPECT_EQ(outside, not_available + "|" + not_available + "|" + not_available);
    const auto before = enforcer_->counters().refused_bind;
    const auto result = run_in(agent_->path(), [&] {
        return bind_text(AF_INET, SOCK_STREAM, v4_other) + "|" + bind_text(AF_INET6, SOCK_STREAM, v6_other) + "|" +
               bind_text(AF_INET6, SOCK_DGRAM, mapped_other);
    });
    EXPECT_EQ(result.output, errno_name(EPERM) + "|" + errno_name(EPERM) + "|" + errno_name(EPERM));
    EXPECT_EQ(enforcer_->counters().refused_bind - before, 3U);
    EXPECT_TRUE(enforcer_->hooks().bind);
}

TEST_F(EnforcerTest, ACgroupWithoutRegistrationCannotBindAtAll) {
    auto stray = netns::Cgroup::create(root_ / "agents", "stray");
    const auto before = enforcer_->counters().refused_unregistered;
    const auto result = run_in(stray.path(), [] { return bind_text(AF_INET, SOCK_STREAM, "127.0.0.1"); });
    EXPECT_EQ(result.output, errno_name(EPERM));
    EXPECT_EQ(enforcer_->counters().refused_unregistered - before, 1U);
    stray.remove(5s);
}

// An older daemon pinned links for the programs it had; the new one adds the
// rest when it starts, without being asked to enforce the cgroup again.
TEST_F(EnforcerTest, LinksPinnedBeforeTheNewHooksExistedGainThemOnRestart) {
    enforcer_.reset();
    const auto links = pins_ / "links" / std::to_string(netns::cgroup_id(root_ / "agents"));
    for (const char* name : {"bind4", "bind6", "connect_unix", "sendmsg_unix", "ingress"}) {
        fs::remove(links / name);  // the last reference: the kernel detaches the link
    }
    // The link goes away a moment later (the kernel frees it from a work queue).
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::string before;
    do {
        before = run_in(agent_->path(), [] { return bind_text(AF_INET, SOCK_STREAM, "0.0.0.0"); }).output;
    } while (before.rfind("0.0.0.0:", 0) != 0 && std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(before.rfind("0.0.0.0:", 0), 0U) << "the bind hook is still attached: " << before;

    enforcer_.emplace(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()});
    EXPECT_TRUE(fs::exists(links / "bind4"));
    EXPECT_TRUE(fs::exists(links / "bind6"));
    EXPECT_TRUE(fs::exists(links / "ingress"));
    EXPECT_EQ(fs::exists(links / "connect_unix"), enforcer_->hooks().unix_sockets);
    const auto after = run_in(agent_->path(), [] { return bind_text(AF_INET, SOCK_STREAM, "0.0.0.0"); });
    EXPECT_EQ(after.output.rfind("127.0.0.1:", 0), 0U) << after.output;
}

TEST_F(EnforcerTest, UnixSocketPolicyEntriesThatCannotBeMatchedSafelyAreRejected) {
    const std::string long_path = "/" + std::string(107, 'a');
    for (const std::string& entry :
         {std::string(), std::string("run/app.sock"), std::string("/run/../app.sock"), std::string("/run/./app.sock"),
          std::string("/run//app.sock"), std::string("/run/app/.."), std::string("/run/."), std::string("@"), long_path,
          "@" + std::string(108, 'a'), std::string("/run/a\0b", 8)}) {
        bpf::UnixSocketPolicy policy;
        policy.allow = {"/run/fine.sock", entry};
        try {
            enforcer_->set_unix_policy(agent_->id(), policy);
            ADD_FAILURE() << "accepted \"" << entry << "\"";
        } catch (const std::invalid_argument& error) {
            EXPECT_NE(std::string(error.what()).find("; "), std::string::npos) << "no hint: " << error.what();
        }
    }
    bpf::UnixSocketPolicy fine;
    fine.allow = {"/",
                  "/run/app.sock",
                  "/run/app/",
                  "@name",
                  "@/org/freedesktop/systemd1/notify",
                  "/" + std::string(106, 'a'),
                  "@" + std::string(107, 'a'),
                  "/run/..app",
                  "/run/.hidden/"};
    EXPECT_NO_THROW(enforcer_->set_unix_policy(agent_->id(), fine));
}

// Where the kernel has the hooks, they are loaded: a unix test never skips
// for a mistake of ours.
TEST_F(EnforcerTest, TheUnixSocketHooksAreThereWhereverTheKernelHasThem) {
    const auto hooks = enforcer_->hooks();
    EXPECT_EQ(hooks.unix_sockets, kernel_has_unix_hooks()) << hooks.unix_sockets_missing;
    EXPECT_EQ(hooks.unix_sockets, hooks.unix_sockets_missing.empty());
    const auto links = pins_ / "links" / std::to_string(netns::cgroup_id(root_ / "agents"));
    EXPECT_EQ(fs::exists(links / "connect_unix"), hooks.unix_sockets);
    EXPECT_EQ(fs::exists(links / "sendmsg_unix"), hooks.unix_sockets);
}

// As on a kernel without the unix socket hooks: the rest loads and enforces.
// Links a daemon with the hooks left pinned are detached: what hooks() says
// is what is attached.
TEST_F(EnforcerTest, WithoutTheUnixSocketHooksEverythingElseIsEnforced) {
    enforcer_.reset();
    bpf::EnforcerOptions options{pins_, true, netns::cgroup2_mount()};
    options.unix_socket_hooks = false;
    enforcer_.emplace(options);
    EXPECT_FALSE(enforcer_->hooks().unix_sockets);
    EXPECT_NE(enforcer_->hooks().unix_sockets_missing, "");
    const auto links = pins_ / "links" / std::to_string(netns::cgroup_id(root_ / "agents"));
    EXPECT_FALSE(fs::exists(links / "connect_unix"));
    EXPECT_FALSE(fs::exists(links / "sendmsg_unix"));
    enforcer_->enforce(root_ / "agents");
    EXPECT_FALSE(fs::exists(links / "connect_unix"));
    EXPECT_TRUE(fs::exists(links / "bind4"));

    const auto dir = fs::temp_directory_path() / ("tf-bpf-unix-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const UnixListener listener(SOCK_STREAM, (dir / "any.sock").string());
    const auto target = v4("127.0.0.1", canary_.port());
    const auto result = run_in(agent_->path(), [&] {
        return try_connect(AF_INET, SOCK_STREAM, target) + "|" + bind_text(AF_INET, SOCK_STREAM, "0.0.0.0") + "|" +
               try_unix(SOCK_STREAM, (dir / "any.sock").string());
    });
    const auto parts = split(result.output);
    ASSERT_EQ(parts.size(), 3U) << result.output;
    EXPECT_EQ(parts[0], "ok 127.0.0.1:" + canary_.port_text());
    EXPECT_EQ(parts[1].rfind("127.0.0.1:", 0), 0U) << parts[1];
    EXPECT_EQ(parts[2], "ok");  // nothing filters unix sockets here
    EXPECT_TRUE(listener.reached());
    EXPECT_TRUE(UniqueFd(proxy_.accept(2s)));
    fs::remove_all(dir);
}

// The agents' sockets in a network with another machine on it: a veth pair
// between two network namespaces the test makes (EnforcerVethTest).
class EnforcerVethTest : public EnforcerTest {
protected:
    void SetUp() override {
        EnforcerTest::SetUp();
        if (IsSkipped()) return;
        try {
            network_.emplace();
        } catch (const std::system_error& error) {
            if (error.code() == std::errc::operation_not_supported) {
                GTEST_SKIP() << "the kernel has no veth: " << error.what();
            }
            throw;
        }
    }

    std::optional<VethNetwork> network_;
};

// listen() on a socket that was never bound, and sendto() from one, bind the
// any-address without the bind hooks: in `cgroup` isolation that is every
// interface of the host. The ingress filter lets such sockets hear loopback
// only, which is where the proxy, the DNS stub and local clients are.
TEST_F(EnforcerVethTest, ListenersAndSendersThatNeverBindHearLoopbackOnly) {
    const auto before = enforcer_->counters().refused_ingress;
    const auto seen = try_unbound_sockets(agent_->path(), *network_);
    const auto bound = split(seen.bound, ' ');
    ASSERT_EQ(bound.size(), 3U) << "the agent's process failed: " << seen.arrivals;
    EXPECT_EQ(bound[0].rfind("0.0.0.0:", 0), 0U) << bound[0];
    EXPECT_EQ(bound[1].rfind("[::]:", 0), 0U) << bound[1];
    EXPECT_EQ(bound[2].rfind("0.0.0.0:", 0), 0U) << bound[2];
    EXPECT_NE(bound[2], "0.0.0.0:0") << "sendto did not bind the socket";

    EXPECT_EQ(seen.from_outside, "no answer|no answer|ok") << "over the veth: the agent's tcp|tcp6|the test's";
    EXPECT_EQ(seen.control_datagram, "arrived");
    // Over loopback, 192.0.2.1 included: the filter goes by the device a packet arrived on, not its address.
    EXPECT_EQ(seen.from_inside, "ok|ok|ok");
    EXPECT_EQ(seen.arrivals,
              "tcp from 127.0.0.1|tcp from 192.0.2.1|tcp from [::ffff:127.0.0.1]|udp loopback from 127.0.0.1");
    // A SYN per connect (and its retransmissions) and the datagram.
    EXPECT_GE(enforcer_->counters().refused_ingress - before, 3U);
}

// The filter does not look up registrations (it runs in softirq, where the
// current task is nobody in particular): a stray cgroup of the subtree,
// which cannot bind at all, is not reached from outside either.
TEST_F(EnforcerVethTest, ListenersOfACgroupWithoutRegistrationHearLoopbackOnlyToo) {
    auto stray = netns::Cgroup::create(root_ / "agents", "stray");
    const auto before = enforcer_->counters().refused_ingress;
    const auto seen = try_unbound_sockets(stray.path(), *network_);
    stray.remove(5s);
    ASSERT_EQ(split(seen.bound, ' ').size(), 3U) << "the stray process failed: " << seen.arrivals;
    EXPECT_EQ(seen.from_outside, "no answer|no answer|ok");
    EXPECT_EQ(seen.control_datagram, "arrived");
    EXPECT_EQ(seen.from_inside, "ok|ok|ok");
    EXPECT_EQ(seen.arrivals,
              "tcp from 127.0.0.1|tcp from 192.0.2.1|tcp from [::ffff:127.0.0.1]|udp loopback from 127.0.0.1");
    EXPECT_GE(enforcer_->counters().refused_ingress - before, 3U);
}

class EnforcerUnixTest : public EnforcerTest {
protected:
    void SetUp() override {
        EnforcerTest::SetUp();
        if (IsSkipped()) return;
        if (const auto hooks = enforcer_->hooks(); !hooks.unix_sockets) GTEST_SKIP() << hooks.unix_sockets_missing;
        dir_ = fs::temp_directory_path() /
               ("tf-bpf-unix-" + std::to_string(::getpid()) + "-" + std::to_string(sequence++));
        fs::create_directories(dir_ / "allowed" / "dir");
        abstract_ = "@tf-bpf-test-" + dir_.filename().string();
    }

    void TearDown() override {
        std::error_code ignored;
        if (!dir_.empty()) fs::remove_all(dir_, ignored);
        EnforcerTest::TearDown();
    }

    void allow(std::vector<std::string> entries, bool any_abstract = false) {
        bpf::UnixSocketPolicy policy;
        policy.allow = std::move(entries);
        policy.any_abstract = any_abstract;
        enforcer_->set_unix_policy(agent_->id(), policy);
    }

    [[nodiscard]] std::string path(const std::string& relative) const { return (dir_ / relative).string(); }

    fs::path dir_;
    std::string abstract_;
};

TEST_F(EnforcerUnixTest, UnixConnectsReachOnlyExactAndDirectoryEntriesOfTheList) {
    const UnixListener exact(SOCK_STREAM, path("allowed/exact.sock"));
    const UnixListener inside(SOCK_STREAM, path("allowed/dir/inside.sock"));
    const UnixListener other(SOCK_STREAM, path("allowed/other.sock"));
    allow({path("allowed/exact.sock"), path("allowed/dir/")});
    const auto before = enforcer_->counters().refused_unix;
    const auto result = run_in(agent_->path(), [&] {
        return try_unix(SOCK_STREAM, path("allowed/other.sock")) + "|" +
               try_unix(SOCK_STREAM, path("allowed/exact.sock")) + "|" +
               try_unix(SOCK_STREAM, path("allowed/dir/inside.sock"));
    });
    EXPECT_EQ(result.output, errno_name(EPERM) + "|ok|ok");
    EXPECT_FALSE(other.reached()) << "a socket off the list saw a connection";
    EXPECT_TRUE(exact.reached());
    EXPECT_TRUE(inside.reached());
    EXPECT_EQ(enforcer_->counters().refused_unix - before, 1U);
}

// The path is compared as written, so anything that would let a path under
// an allowed directory resolve elsewhere is refused, even when it happens to
// resolve to an allowed socket.
TEST_F(EnforcerUnixTest, UnixPathsThatAreNotCanonicalOrNotAbsoluteAreRefused) {
    const UnixListener exact(SOCK_STREAM, path("allowed/exact.sock"));
    const UnixListener inside(SOCK_STREAM, path("allowed/dir/inside.sock"));
    const UnixListener other(SOCK_STREAM, path("allowed/other.sock"));
    allow({path("allowed/exact.sock"), path("allowed/dir/")});
    const std::string escape = path("allowed/dir/../other.sock");
    EXPECT_EQ(try_unix(SOCK_STREAM, escape), "ok") << "the kernel itself resolves " << escape;
    EXPECT_TRUE(other.reached());
    const auto result = run_in(agent_->path(), [&] {
        std::string out = try_unix(SOCK_STREAM, escape) + "|" +
                          try_unix(SOCK_STREAM, path("allowed/dir/./inside.sock")) + "|" +
                          try_unix(SOCK_STREAM, path("allowed//exact.sock")) + "|" +
                          try_unix(SOCK_STREAM, path("allowed/dir/..")) + "|";
        if (::chdir(path("allowed/dir").c_str()) != 0) return out + errno_name(errno);
        return out + try_unix(SOCK_STREAM, "inside.sock") + "|" + try_unix(SOCK_STREAM, "../exact.sock");
    });
    const auto refused = errno_name(EPERM);
    EXPECT_EQ(result.output, refused + "|" + refused + "|" + refused + "|" + refused + "|" + refused + "|" + refused);
    EXPECT_FALSE(other.reached());
    EXPECT_FALSE(exact.reached());
    EXPECT_FALSE(inside.reached());
}

TEST_F(EnforcerUnixTest, AbstractNamesNeedTheFlagOrAnExactEntry) {
    const std::string suffixed = abstract_ + std::string("\0x", 2);  // another name: abstract names may hold NULs
    const UnixListener named(SOCK_STREAM, abstract_);
    const UnixListener longer(SOCK_STREAM, suffixed);
    const UnixListener extended(SOCK_STREAM, abstract_ + "x");
    const auto attempt = [&] {
        return run_in(agent_->path(),
                      [&] {
                          return try_unix(SOCK_STREAM, abstract_) + "|" + try_unix(SOCK_STREAM, suffixed) + "|" +
                                 try_unix(SOCK_STREAM, abstract_ + "x");
                      })
            .output;
    };
    const auto refused = errno_name(EPERM);
    allow({});
    EXPECT_EQ(attempt(), refused + "|" + refused + "|" + refused);
    allow({abstract_});
    EXPECT_EQ(attempt(), "ok|" + refused + "|" + refused);
    EXPECT_TRUE(named.reached());
    EXPECT_FALSE(longer.reached());
    EXPECT_FALSE(extended.reached());
    allow({}, true);
    EXPECT_EQ(attempt(), "ok|ok|ok");
    EXPECT_TRUE(named.reached());
    EXPECT_TRUE(longer.reached());
    EXPECT_TRUE(extended.reached());
}

TEST_F(EnforcerUnixTest, UnixDatagramsAreSentOnlyToTheList) {
    const UnixListener receiver(SOCK_DGRAM, path("allowed/dgram.sock"));
    const UnixListener abstract_receiver(SOCK_DGRAM, abstract_);
    const auto attempt = [&] {
        return run_in(agent_->path(),
                      [&] {
                          std::string out = try_unix(SOCK_DGRAM, path("allowed/dgram.sock")) + "|" +
                                            try_unix(SOCK_DGRAM, abstract_) + "|";
                          // connect() of a datagram socket goes through connect_unix.
                          const UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
                          const UnixAddress to = unix_address(path("allowed/dgram.sock"));
                          if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to.address), to.length) != 0) {
                              return out + errno_name(errno);
                          }
                          return out + (::send(fd.get(), "y", 1, 0) == 1 ? "ok" : errno_name(errno));
                      })
            .output;
    };
    const auto refused = errno_name(EPERM);
    allow({path("allowed/dir/")});
    EXPECT_EQ(attempt(), refused + "|" + refused + "|" + refused);
    EXPECT_FALSE(receiver.reached());
    EXPECT_FALSE(abstract_receiver.reached());
    allow({path("allowed/dgram.sock"), abstract_});
    EXPECT_EQ(attempt(), "ok|ok|ok");
    EXPECT_TRUE(receiver.reached());
    EXPECT_TRUE(receiver.reached());
    EXPECT_TRUE(abstract_receiver.reached());
}

TEST_F(EnforcerUnixTest, ANewListReplacesTheOldOne) {
    const UnixListener exact(SOCK_STREAM, path("allowed/exact.sock"));
    const UnixListener inside(SOCK_STREAM, path("allowed/dir/inside.sock"));
    const auto attempt = [&] {
        return run_in(agent_->path(),
                      [&] {
                          return try_unix(SOCK_STREAM, path("allowed/exact.sock")) + "|" +
                                 try_unix(SOCK_STREAM, path("allowed/dir/inside.sock"));
                      })
            .output;
    };
    allow({path("allowed/exact.sock")});
    EXPECT_EQ(attempt(), "ok|" + errno_name(EPERM));
    allow({path("allowed/dir/")});
    EXPECT_EQ(attempt(), errno_name(EPERM) + "|ok");
    // Re-registering the route keeps the list.
    enforcer_->add_agent(agent_->id(), route_);
    EXPECT_EQ(attempt(), errno_name(EPERM) + "|ok");
}

TEST_F(EnforcerUnixTest, ARemovedRegistrationReachesNoUnixSocketAndLosesItsList) {
    const UnixListener exact(SOCK_STREAM, path("allowed/exact.sock"));
    allow({path("allowed/exact.sock"), abstract_}, true);
    const auto attempt = [&] {
        return run_in(agent_->path(), [&] { return try_unix(SOCK_STREAM, path("allowed/exact.sock")); }).output;
    };
    EXPECT_EQ(attempt(), "ok");
    EXPECT_TRUE(exact.reached());
    const auto before = enforcer_->counters().refused_unregistered;
    enforcer_->remove_agent(agent_->id());
    EXPECT_EQ(attempt(), errno_name(EPERM));
    EXPECT_EQ(enforcer_->counters().refused_unregistered - before, 1U);
    enforcer_->add_agent(agent_->id(), route_);  // registered again, with no list yet
    EXPECT_EQ(attempt(), errno_name(EPERM));
    EXPECT_FALSE(exact.reached());
}

}  // namespace
}  // namespace tameflare
