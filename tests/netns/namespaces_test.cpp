// Network namespaces on the real kernel: loopback only, cookies, sockets
// made inside. Traffic only on loopback.
#include "netns/namespaces.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "tests/support/loopback.h"

namespace tameflare::netns {
namespace {

using namespace std::chrono_literals;

proxy::Endpoint endpoint(const std::string& text) {
    const auto parsed = proxy::Endpoint::parse(text);
    if (!parsed) throw std::invalid_argument("bad endpoint " + text);
    return *parsed;
}

// A blocking TCP connect from the calling thread's namespace: 0 or the errno.
int tcp_connect(const proxy::Endpoint& to) {
    const auto text = to.address.to_string();
    const UniqueFd fd(::socket(to.address.v4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno;
    int rc = 0;
    if (to.address.v4) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_port = htons(to.port);
        ::inet_pton(AF_INET, text.c_str(), &in.sin_addr);
        rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&in), sizeof in);
    } else {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(to.port);
        ::inet_pton(AF_INET6, text.c_str(), &in6.sin6_addr);
        rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&in6), sizeof in6);
    }
    return rc == 0 ? 0 : errno;
}

// Accepts one connection on a non-blocking listener within `timeout`.
bool accepts(int listener, std::chrono::milliseconds timeout = 2s) {
    pollfd ready{listener, POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return false;
    const UniqueFd connection(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    return static_cast<bool>(connection);
}

std::uint64_t own_netns_inode() {
    struct stat info {};
    if (::stat("/proc/thread-self/ns/net", &info) != 0) throw std::runtime_error("cannot stat own netns");
    return info.st_ino;
}

std::uint64_t host_cookie() {
    const UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    return socket_netns_cookie(probe.get());
}

class NamespacesTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to create network namespaces";
        }
    }
};

TEST_F(NamespacesTest, CreateGivesOnlyLoopbackUpWithItsAddresses) {
    const auto host_inode = own_netns_inode();
    const auto ns = NetworkNamespace::create();
    EXPECT_EQ(own_netns_inode(), host_inode) << "the caller's namespace changed";
    EXPECT_NE(ns.inode(), host_inode);
    struct stat info {};
    ASSERT_EQ(::fstat(ns.fd(), &info), 0);
    EXPECT_EQ(ns.inode(), info.st_ino);

    struct Inside {
        std::set<std::string> links;
        unsigned flags = 0;
        std::set<std::string> addresses;
        std::uint64_t inode = 0;
    };
    const auto inside = ns.run_inside([] {
        Inside out;
        out.inode = own_netns_inode();
        if (auto* names = ::if_nameindex()) {
            for (auto* name = names; name->if_index != 0; ++name) out.links.insert(name->if_name);
            ::if_freenameindex(names);
        }
        const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        ifreq request{};
        std::strcpy(request.ifr_name, "lo");
        if (::ioctl(fd.get(), SIOCGIFFLAGS, &request) == 0) out.flags = static_cast<unsigned short>(request.ifr_flags);
        ifaddrs* list = nullptr;
        if (::getifaddrs(&list) == 0) {
            for (auto* at = list; at != nullptr; at = at->ifa_next) {
                if (at->ifa_addr == nullptr) continue;
                char text[INET6_ADDRSTRLEN] = {};
                if (at->ifa_addr->sa_family == AF_INET) {
                    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(at->ifa_addr)->sin_addr, text, sizeof text);
                } else if (at->ifa_addr->sa_family == AF_INET6) {
                    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(at->ifa_addr)->sin6_addr, text, sizeof text);
                } else {
                    continue;
                }
                out.addresses.insert(std::string(at->ifa_name) + " " + text);
            }
            ::freeifaddrs(list);
        }
        return out;
    });
    EXPECT_EQ(inside.inode, ns.inode());
    EXPECT_EQ(inside.links, std::set<std::string>{"lo"});
    EXPECT_TRUE(inside.flags & IFF_UP);
    EXPECT_TRUE(inside.flags & IFF_LOOPBACK);
    EXPECT_TRUE(inside.addresses.count("lo 127.0.0.1")) << "addresses: " << inside.addresses.size();
    std::ifstream disabled("/proc/sys/net/ipv6/conf/default/disable_ipv6");
    int ipv6_disabled = 1;
    if (disabled >> ipv6_disabled && ipv6_disabled == 0) {
        EXPECT_TRUE(inside.addresses.count("lo ::1"));
    }
}

TEST_F(NamespacesTest, LoopbackInsideWorksAndTheHostsLoopbackIsUnreachable) {
    const auto ns = NetworkNamespace::create();
    const auto listener = ns.listen_tcp(endpoint("127.0.0.1:0"));
    const auto at = local_endpoint(listener.get());
    EXPECT_EQ(at.address.to_string(), "127.0.0.1");
    EXPECT_NE(at.port, 0);
    EXPECT_EQ(ns.run_inside([&at] { return tcp_connect(at); }), 0);
    EXPECT_TRUE(accepts(listener.get()));

    // The same port in the host namespace has no listener; the host's own listener is not reachable from inside.
    EXPECT_EQ(tcp_connect(at), ECONNREFUSED);
    const testing::LoopbackListener host;
    const auto host_at = endpoint("127.0.0.1:" + host.port_text());
    EXPECT_EQ(ns.run_inside([&host_at] { return tcp_connect(host_at); }), ECONNREFUSED);
    EXPECT_EQ(host.accept(200ms), -1);
    // A control: from the host namespace the host listener answers.
    EXPECT_EQ(tcp_connect(host_at), 0);
}

TEST_F(NamespacesTest, CookieIsTheNamespacesAndDiffersFromTheHosts) {
    const auto first = NetworkNamespace::create();
    const auto second = NetworkNamespace::create();
    EXPECT_NE(first.cookie(), 0U);
    EXPECT_NE(first.cookie(), host_cookie());
    EXPECT_NE(first.cookie(), second.cookie());

    const auto listener = first.listen_tcp(endpoint("127.0.0.1:0"));
    std::uint64_t cookie = 0;
    socklen_t length = sizeof cookie;
    ASSERT_EQ(::getsockopt(listener.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length), 0);
    EXPECT_EQ(cookie, first.cookie());
    const auto udp = second.bind_udp(endpoint("127.0.0.1:0"));
    EXPECT_EQ(socket_netns_cookie(udp.get()), second.cookie());

    // Adopting an fd of the same namespace finds the same cookie and inode.
    const auto adopted = NetworkNamespace::adopt(UniqueFd(::fcntl(first.fd(), F_DUPFD_CLOEXEC, 0)));
    EXPECT_EQ(adopted.cookie(), first.cookie());
    EXPECT_EQ(adopted.inode(), first.inode());
    const auto host = NetworkNamespace::adopt(UniqueFd(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)));
    EXPECT_EQ(host.cookie(), host_cookie());
}

TEST_F(NamespacesTest, RunInsideReturnsValuesAndPropagatesExceptions) {
    const auto ns = NetworkNamespace::create();
    const auto host_inode = own_netns_inode();
    EXPECT_EQ(ns.run_inside([] { return own_netns_inode(); }), ns.inode());
    EXPECT_EQ(own_netns_inode(), host_inode);
    try {
        ns.run_inside([]() -> int { throw std::runtime_error("boom inside"); });
        ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "boom inside");
    }
    bool ran = false;
    ns.run_inside([&ran] { ran = true; });
    EXPECT_TRUE(ran);
    EXPECT_EQ(own_netns_inode(), host_inode);
}

TEST_F(NamespacesTest, SocketsAreNonBlockingCloexecAndReportUsefulErrors) {
    const auto listener = listen_tcp(endpoint("127.0.0.1:0"));
    EXPECT_TRUE(::fcntl(listener.get(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(listener.get(), F_GETFD) & FD_CLOEXEC);
    int reuse = 0;
    socklen_t length = sizeof reuse;
    ASSERT_EQ(::getsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, &length), 0);
    EXPECT_EQ(reuse, 1);
    const auto at = local_endpoint(listener.get());
    EXPECT_EQ(tcp_connect(at), 0);
    EXPECT_TRUE(accepts(listener.get()));

    try {
        (void)listen_tcp(at);
        ADD_FAILURE() << "bound a port that is taken";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EADDRINUSE);
        EXPECT_NE(std::string(e.what()).find(at.to_string()), std::string::npos) << e.what();
    }

    // UDP: a datagram sent inside a namespace reaches the socket bound there.
    const auto ns = NetworkNamespace::create();
    const auto udp = ns.bind_udp(endpoint("127.0.0.1:0"));
    const auto udp_at = local_endpoint(udp.get());
    const auto sent = ns.run_inside([&udp_at] {
        const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(udp_at.port);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return ::sendto(fd.get(), "ping", 4, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    });
    EXPECT_EQ(sent, 4);
    pollfd ready{udp.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&ready, 1, 2000), 1);
    char buffer[8] = {};
    EXPECT_EQ(::recv(udp.get(), buffer, sizeof buffer, 0), 4);
    EXPECT_STREQ(buffer, "ping");
}

TEST_F(NamespacesTest, Ipv6LoopbackWorksInsideWhenEnabled) {
    std::ifstream disabled("/proc/sys/net/ipv6/conf/default/disable_ipv6");
    int ipv6_disabled = 1;
    if (!(disabled >> ipv6_disabled)) {
        GTEST_SKIP() << "the kernel has no IPv6";
    }
    if (ipv6_disabled != 0) {
        GTEST_SKIP() << "IPv6 is disabled by sysctl net.ipv6.conf.default.disable_ipv6";
    }

    const auto ns = NetworkNamespace::create();
    const auto listener = ns.listen_tcp(endpoint("[::1]:0"));
    int v6only = 0;
    socklen_t length = sizeof v6only;
    ASSERT_EQ(::getsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &length), 0);
    EXPECT_EQ(v6only, 1);
    const auto at = local_endpoint(listener.get());
    EXPECT_EQ(at.to_string(), "[::1]:" + std::to_string(at.port));
    EXPECT_EQ(ns.run_inside([&at] { return tcp_connect(at); }), 0);
    EXPECT_TRUE(accepts(listener.get()));

    const auto udp = ns.bind_udp(endpoint("[::1]:0"));
    ASSERT_EQ(::getsockopt(udp.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &length), 0);
    EXPECT_EQ(v6only, 1);
}

}  // namespace
}  // namespace tameflare::netns
