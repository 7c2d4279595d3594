// The kernel enforcement, seen from the daemon: the BPF programs attached to
// the cgroups that hold agents, the registrations that say where each
// agent's connections go, and the look-up of what a redirected connection
// originally dialed. Nothing of libbpf shows through this header.
//
// Programs, links and maps are pinned under the pin directory, so they
// outlive the daemon: with the daemon gone an agent's connects still go to
// its (now closed) listener and fail. A new Enforcer re-adopts the pinned
// maps and replaces the programs of pinned links in place (BPF_LINK_UPDATE),
// so there is no moment at which a connect is not redirected.
#pragma once

#include "daemon/proxy/address_policy.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::bpf {

// Where the connections of one registered cgroup (and everything below it) go.
struct AgentRoute {
    std::uint32_t proxy_ip4 = 0x7f000001;  // host order; IPv6 sockets reach it as ::ffff:a.b.c.d
    std::uint16_t proxy_port = 0;          // every TCP connect
    std::uint16_t dns_udp_port = 0;        // UDP to port 53
    std::uint16_t dns_tcp_port = 0;        // TCP to port 53
    [[nodiscard]] bool operator==(const AgentRoute&) const = default;
};

// What the agent dialed, for a connection the proxy accepted.
struct Origin {
    proxy::Endpoint destination;  // an IPv4 destination is v4 even when dialed from an IPv6 socket
    std::uint64_t agent = 0;      // the registration (cgroup id) it was routed by
};

struct Counters {
    std::uint64_t tcp_redirected = 0;
    std::uint64_t dns_redirected = 0;
    std::uint64_t refused_unregistered = 0;  // a socket of the subtree with no registration above it
    std::uint64_t refused_udp = 0;           // UDP to a port other than 53
    std::uint64_t refused_socket = 0;        // raw, ICMP, SCTP, MPTCP ... sockets
    std::uint64_t refused_type = 0;
    std::uint64_t origin_full = 0;
};

struct EnforcerOptions {
    std::filesystem::path pin_dir = "/sys/fs/bpf/tameflare";
};

class Enforcer {
public:
    // Mounts bpffs when the pin directory's parent has none, loads the
    // programs (re-using pinned maps) and updates every pinned link to them.
    // Throws std::runtime_error saying what failed and what to do.
    explicit Enforcer(EnforcerOptions options = {});
    ~Enforcer();  // leaves links and maps pinned: enforcement outlives the daemon
    Enforcer(const Enforcer&) = delete;
    Enforcer& operator=(const Enforcer&) = delete;

    // Attaches every program to `cgroup` (a directory of the cgroup2 mount),
    // or, when it is already enforced, updates its links to these programs.
    void enforce(const std::filesystem::path& cgroup);
    // Detaches the programs from `cgroup` and removes its pins.
    void release(const std::filesystem::path& cgroup);
    // The cgroup ids whose links are pinned.
    [[nodiscard]] std::vector<std::uint64_t> enforced() const;

    void add_agent(std::uint64_t cgroup_id, const AgentRoute& route);
    void remove_agent(std::uint64_t cgroup_id);
    [[nodiscard]] std::map<std::uint64_t, AgentRoute> agents() const;

    // The original destination of a connection accepted from `client` (its
    // peer address) in the network namespace with `netns_cookie`.
    [[nodiscard]] std::optional<Origin> origin(std::uint64_t netns_cookie, const proxy::Endpoint& client) const;

    [[nodiscard]] Counters counters() const;
    [[nodiscard]] const std::filesystem::path& pin_dir() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// Why this kernel or process cannot enforce ("" when it can): no BTF, no
// cgroup2, or bpf() refused. Tests skip with this reason.
std::string unsupported_reason();

}  // namespace tameflare::bpf
