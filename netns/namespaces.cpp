#include "netns/namespaces.h"

#include "netns/error.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/link.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

namespace tameflare::netns {
namespace {

using detail::fail;

struct NlSockDeleter {
    void operator()(nl_sock* sock) const { nl_socket_free(sock); }
};
struct RtnlLinkDeleter {
    void operator()(rtnl_link* link) const { rtnl_link_put(link); }
};
using NlSockPtr = std::unique_ptr<nl_sock, NlSockDeleter>;
using RtnlLinkPtr = std::unique_ptr<rtnl_link, RtnlLinkDeleter>;

[[noreturn]] void fail_netlink(int nl_error, const std::string& what) {
    throw std::runtime_error(what + ": " + nl_geterror(nl_error));
}

// Brings lo up in the calling thread's namespace: the kernel then gives it 127.0.0.1/8 and (unless IPv6 is
// disabled) ::1 by itself.
void bring_loopback_up() {
    NlSockPtr sock(nl_socket_alloc());
    if (!sock) throw std::bad_alloc();
    if (const int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
        fail_netlink(err, "cannot open a netlink route socket in the new network namespace");
    }
    rtnl_link* found = nullptr;
    if (const int err = rtnl_link_get_kernel(sock.get(), 0, "lo", &found); err < 0) {
        fail_netlink(err, "cannot find the loopback interface lo in the new network namespace");
    }
    const RtnlLinkPtr lo(found);
    const RtnlLinkPtr change(rtnl_link_alloc());
    if (!change) throw std::bad_alloc();
    rtnl_link_set_flags(change.get(), IFF_UP);
    if (const int err = rtnl_link_change(sock.get(), lo.get(), change.get(), 0); err < 0) {
        fail_netlink(err, "cannot bring lo up in the new network namespace");
    }
}

std::uint64_t fd_inode(int fd, const char* what) {
    struct stat info {};
    if (::fstat(fd, &info) != 0) fail(errno, std::string("cannot stat ") + what);
    return info.st_ino;
}

// The cookie of the calling thread's network namespace.
std::uint64_t current_netns_cookie() {
    const UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!probe) fail(errno, "cannot create a socket to read the network namespace cookie");
    return socket_netns_cookie(probe.get());
}

struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;
    int family = AF_UNSPEC;
};

SocketAddress to_sockaddr(const proxy::Endpoint& at) {
    SocketAddress out;
    if (at.address.v4) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_port = htons(at.port);
        std::memcpy(&in.sin_addr, at.address.bytes.data(), 4);
        std::memcpy(&out.storage, &in, sizeof in);
        out.length = sizeof in;
        out.family = AF_INET;
    } else {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(at.port);
        std::memcpy(&in6.sin6_addr, at.address.bytes.data(), 16);
        std::memcpy(&out.storage, &in6, sizeof in6);
        out.length = sizeof in6;
        out.family = AF_INET6;
    }
    return out;
}

UniqueFd bound_socket(const proxy::Endpoint& at, int type) {
    const auto address = to_sockaddr(at);
    const char* kind = type == SOCK_STREAM ? "TCP" : "UDP";
    UniqueFd fd(::socket(address.family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        fail(errno, std::string("cannot create a ") + kind + " socket for " + at.to_string(),
             address.family == AF_INET6 ? "is IPv6 disabled on this host?" : "");
    }
    const int one = 1;
    if (type == SOCK_STREAM && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
        fail(errno, "cannot set SO_REUSEADDR on " + at.to_string());
    }
    // An IPv6 socket serves IPv6 only: IPv4 has its own socket, so mapped addresses never reach this one.
    if (address.family == AF_INET6 && ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
        fail(errno, "cannot set IPV6_V6ONLY on " + at.to_string());
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.storage), address.length) != 0) {
        const int err = errno;
        std::string_view fix;
        if (err == EADDRINUSE) fix = "another socket holds that port; configure another one";
        if (err == EADDRNOTAVAIL) fix = "no interface has that address here (is IPv6 disabled, or lo down?)";
        if (err == EACCES) fix = "ports below 1024 need CAP_NET_BIND_SERVICE";
        fail(err, std::string("cannot bind ") + kind + " " + at.to_string(), fix);
    }
    return fd;
}

}  // namespace

void run_in_network_namespace(int ns_fd, const std::function<void()>& fn) {
    std::exception_ptr error;
    // setns affects only the calling thread; the thread dies with the namespace switch.
    std::thread worker([&] {
        try {
            if (::setns(ns_fd, CLONE_NEWNET) != 0) {
                fail(errno, "cannot enter network namespace (setns fd " + std::to_string(ns_fd) + ")",
                     "tameflared needs CAP_SYS_ADMIN");
            }
            fn();
        } catch (...) {
            error = std::current_exception();
        }
    });
    worker.join();
    if (error) std::rethrow_exception(error);
}

NetworkNamespace NetworkNamespace::create() {
    UniqueFd ns_fd;
    std::uint64_t cookie = 0;
    std::exception_ptr error;
    // unshare on a thread of its own: the caller's threads stay in their namespace, and this one exits.
    std::thread worker([&] {
        try {
            if (::unshare(CLONE_NEWNET) != 0) {
                fail(errno, "cannot create a network namespace (unshare CLONE_NEWNET)",
                     "tameflared needs CAP_SYS_ADMIN, and the kernel CONFIG_NET_NS");
            }
            ns_fd.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
            if (!ns_fd) fail(errno, "cannot open /proc/thread-self/ns/net", "is /proc mounted?");
            bring_loopback_up();
            cookie = current_netns_cookie();
        } catch (...) {
            error = std::current_exception();
        }
    });
    worker.join();
    if (error) std::rethrow_exception(error);
    const auto inode = fd_inode(ns_fd.get(), "the network namespace fd");
    return {std::move(ns_fd), cookie, inode};
}

NetworkNamespace NetworkNamespace::adopt(UniqueFd ns_fd) {
    if (!ns_fd) throw std::invalid_argument("NetworkNamespace::adopt: no namespace fd");
    std::uint64_t cookie = 0;
    run_in_network_namespace(ns_fd.get(), [&cookie] { cookie = current_netns_cookie(); });
    const auto inode = fd_inode(ns_fd.get(), "the network namespace fd");
    return {std::move(ns_fd), cookie, inode};
}

UniqueFd NetworkNamespace::listen_tcp(const proxy::Endpoint& at) const {
    return run_inside([&at] { return netns::listen_tcp(at); });
}

UniqueFd NetworkNamespace::bind_udp(const proxy::Endpoint& at) const {
    return run_inside([&at] { return netns::bind_udp(at); });
}

UniqueFd listen_tcp(const proxy::Endpoint& at) {
    auto fd = bound_socket(at, SOCK_STREAM);
    if (::listen(fd.get(), 4096) != 0) fail(errno, "cannot listen on TCP " + at.to_string());
    return fd;
}

UniqueFd bind_udp(const proxy::Endpoint& at) {
    return bound_socket(at, SOCK_DGRAM);
}

proxy::Endpoint local_endpoint(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
        fail(errno, "cannot read the local address of socket " + std::to_string(fd));
    }
    proxy::Endpoint out;
    if (storage.ss_family == AF_INET) {
        sockaddr_in in{};
        std::memcpy(&in, &storage, sizeof in);
        out.address.v4 = true;
        std::memcpy(out.address.bytes.data(), &in.sin_addr, 4);
        out.port = ntohs(in.sin_port);
    } else if (storage.ss_family == AF_INET6) {
        sockaddr_in6 in6{};
        std::memcpy(&in6, &storage, sizeof in6);
        std::memcpy(out.address.bytes.data(), &in6.sin6_addr, 16);
        out.port = ntohs(in6.sin6_port);
    } else {
        throw std::invalid_argument("socket " + std::to_string(fd) + " is not an IPv4 or IPv6 socket");
    }
    return out;
}

std::uint64_t socket_netns_cookie(int fd) {
    std::uint64_t cookie = 0;
    socklen_t length = sizeof cookie;
    if (::getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0) {
        fail(errno, "cannot read SO_NETNS_COOKIE of socket " + std::to_string(fd), "the kernel needs Linux 5.14+");
    }
    return cookie;
}

}  // namespace tameflare::netns
