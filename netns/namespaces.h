// Agents' network namespaces (loopback only) and the listening sockets the
// daemon makes inside them or in its own namespace.
#pragma once

#include "common/address.h"
#include "common/unique_fd.h"

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

namespace tameflare::netns {

// Runs `fn` on a new thread that has entered the network namespace `ns_fd` (setns), joins it, and rethrows what
// `fn` threw. The calling thread's namespace never changes.
void run_in_network_namespace(int ns_fd, const std::function<void()>& fn);

// A network namespace with only the loopback interface, up, with 127.0.0.1/8 and ::1 (only IPv4 when IPv6 is
// disabled by sysctl). Move-only; owns the nsfd.
class NetworkNamespace {
public:
    // Made on a short-lived thread (unshare(CLONE_NEWNET)), so the caller's namespace never changes; lo is brought
    // up over netlink (libnl) from inside.
    static NetworkNamespace create();
    // Adopts an existing namespace fd (e.g. open("/proc/PID/ns/net")).
    static NetworkNamespace adopt(UniqueFd ns_fd);

    [[nodiscard]] int fd() const { return fd_.get(); }  // the setns target
    // The namespace's cookie: SO_NETNS_COOKIE of a socket made inside (what bpf_get_netns_cookie() returns).
    [[nodiscard]] std::uint64_t cookie() const { return cookie_; }
    [[nodiscard]] std::uint64_t inode() const { return inode_; }  // st_ino of the nsfd

    // Runs `fn` on a temporary thread that has entered the namespace and returns its result (exceptions propagate).
    template <class F>
    auto run_inside(F&& fn) const -> std::invoke_result_t<F> {
        using Result = std::invoke_result_t<F>;
        if constexpr (std::is_void_v<Result>) {
            run_in_network_namespace(fd_.get(), [&fn] { std::invoke(fn); });
        } else {
            std::optional<Result> result;
            run_in_network_namespace(fd_.get(), [&fn, &result] { result.emplace(std::invoke(fn)); });
            return std::move(*result);
        }
    }

    // Sockets made inside the namespace (CLOEXEC, NONBLOCK): a TCP listener (SO_REUSEADDR, backlog 4096) and a
    // bound UDP socket. IPv6 sockets are IPV6_V6ONLY.
    [[nodiscard]] UniqueFd listen_tcp(const proxy::Endpoint& at) const;
    [[nodiscard]] UniqueFd bind_udp(const proxy::Endpoint& at) const;

private:
    NetworkNamespace(UniqueFd fd, std::uint64_t cookie, std::uint64_t inode)
        : fd_(std::move(fd)), cookie_(cookie), inode_(inode) {}

    UniqueFd fd_;
    std::uint64_t cookie_ = 0;
    std::uint64_t inode_ = 0;
};

// The same two in the caller's own namespace (cgroup isolation mode).
[[nodiscard]] UniqueFd listen_tcp(const proxy::Endpoint& at);
[[nodiscard]] UniqueFd bind_udp(const proxy::Endpoint& at);
// The local endpoint of a bound socket (to learn a kernel-picked port).
[[nodiscard]] proxy::Endpoint local_endpoint(int fd);
// SO_NETNS_COOKIE of a socket: the cookie of the namespace it was made in.
[[nodiscard]] std::uint64_t socket_netns_cookie(int fd);

}  // namespace tameflare::netns
