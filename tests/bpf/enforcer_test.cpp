// The BPF programs on the real kernel: a process placed in an agent cgroup
// tries every way out, and each one either lands on the agent's proxy or DNS
// listener or fails. Needs root, BTF and cgroup2; skips with the reason
// otherwise.
#include "bpf/enforcer.h"
#include "netns/cgroup.h"
#include "netns/namespaces.h"
#include "support/loopback.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>

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

// connect() from a fresh socket; "ok <peer>" or the errno.
template <class Address>
std::string try_connect(int family, int type, const Address& address) {
    const int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_name(errno);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        const int error = errno;
        ::close(fd);
        return errno_name(error);
    }
    std::string out = "ok " + peer_text(fd);
    ::close(fd);
    return out;
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

class EnforcerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (const std::string reason = bpf::unsupported_reason(); !reason.empty()) GTEST_SKIP() << reason;
        const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(sequence++);
        root_ = netns::cgroup2_mount() / ("tf-bpf-test-" + tag);
        netns::ensure_cgroup(root_ / "agents");
        pins_ = fs::path("/sys/fs/bpf") / ("tf-bpf-test-" + tag);
        enforcer_.emplace(bpf::EnforcerOptions{pins_});
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
            char byte = 0;
            (void)::read(fd, &byte, 1);  // until the parent has looked
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

TEST_F(EnforcerTest, Ipv6AndMappedConnectsGoToTheProxy) {
    const UniqueFd canary6 = netns::listen_tcp(*proxy::Endpoint::parse("[::1]:0"));
    const auto port6 = netns::local_endpoint(canary6.get()).port;
    const auto native = v6("::1", port6);
    const auto mapped = v6("::ffff:127.0.0.1", canary_.port());
    std::vector<std::string> origins;
    const auto result = run_in(
        agent_->path(),
        [&] { return try_connect(AF_INET6, SOCK_STREAM, native) + "|" + try_connect(AF_INET6, SOCK_STREAM, mapped); },
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

    enforcer_.emplace(bpf::EnforcerOptions{pins_});  // restart: re-adopt maps, update links
    EXPECT_EQ(enforcer_->agents().at(agent_->id()), route_);
    EXPECT_EQ(enforcer_->enforced().size(), 1U);
    std::optional<bpf::Origin> origin;
    result = run_in(
        agent_->path(),
        [&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) return errno_name(errno);
            char byte = 0;
            (void)::read(fd, &byte, 1);
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
        enforcer_.emplace(bpf::EnforcerOptions{pins_});  // a restart: never refuses over a severed link
        enforcer_.reset();
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_FALSE(fs::exists(old_links)) << "the severed links are still pinned";

    netns::ensure_cgroup(root_ / "agents");
    enforcer_.emplace(bpf::EnforcerOptions{pins_});
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
                char byte = 0;
                (void)::read(fd, &byte, 1);  // the proxy closes first
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

}  // namespace
}  // namespace tameflare
