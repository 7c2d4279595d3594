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
//
// Besides connects, the programs hold an agent's binds to loopback, drop
// every packet for its sockets that did not arrive on loopback (the sockets
// listen() and sendto() bind to the any-address without a bind hook) and,
// on kernels with the unix socket hooks (6.7+), hold its unix socket
// connects and sends to an allow-list (hooks() says which families this
// kernel has).
#pragma once

#include "bpf/origin_map.h"
#include "common/address.h"
#include "common/unique_fd.h"

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

// The unix sockets one registration may connect or send to. Path entries
// are matched as the caller spells the address, not as the kernel resolves
// it: a directory entry must be one the agent cannot write (a symlink
// planted in it would lead anywhere), and the agent must not be able to
// mount over an allowed path.
struct UnixSocketPolicy {
    std::vector<std::string> allow;  // "/exact/path", "/a/directory/" (prefix), "@abstract-name" (exact)
    bool any_abstract = false;       // every abstract name (the agent has its own network namespace)
};

// The hook families this kernel loaded and attaches (beyond connect,
// sendmsg, recvmsg, getpeername, sock_create, sock_ops and ingress, which
// it must).
struct HookSupport {
    bool bind = false;                 // bind4/6: loopback only
    bool unix_sockets = false;         // connect_unix, sendmsg_unix (6.7+)
    std::string unix_sockets_missing;  // why unix_sockets is false ("" when it is true)
};

struct Counters {
    std::uint64_t tcp_redirected = 0;
    std::uint64_t dns_redirected = 0;
    std::uint64_t refused_unregistered = 0;  // a socket of the subtree with no registration above it
    std::uint64_t refused_udp = 0;           // UDP to a port other than 53
    std::uint64_t refused_socket = 0;        // raw, ICMP, SCTP, MPTCP ... sockets
    std::uint64_t refused_type = 0;
    std::uint64_t origin_full = 0;
    std::uint64_t refused_bind = 0;     // bind to an address other than loopback or the any-address
    std::uint64_t refused_unix = 0;     // unix socket connect or sendmsg to an address not allowed
    std::uint64_t refused_ingress = 0;  // packets for the subtree's sockets from a device other than loopback
};

struct EnforcerOptions {
    std::filesystem::path pin_dir = "/sys/fs/bpf/tameflare";
    // false: leave the unix socket hooks unloaded even where the kernel has
    // them, as on a kernel without (tests of that fallback).
    bool unix_socket_hooks = true;
    // Where cgroup2 is mounted (netns::cgroup2_mount()): a cgroup whose
    // pinned links lack some of this build's programs is opened by its id
    // there to add them (an upgrade).
    std::filesystem::path cgroup2_mount;
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
    // Also removes the registration's unix socket policy.
    void remove_agent(std::uint64_t cgroup_id);
    [[nodiscard]] std::map<std::uint64_t, AgentRoute> agents() const;

    // Replaces the unix socket allow-list of the registration `cgroup_id`
    // (kept apart from add_agent: re-registering a route keeps it). Entries
    // already allowed stay allowed throughout. Throws std::invalid_argument
    // for an entry that is empty, relative, too long for sun_path or has a
    // "//", "." or ".." component. Without the unix hooks (hooks()) the list
    // is kept but nothing checks it.
    void set_unix_policy(std::uint64_t cgroup_id, const UnixSocketPolicy& policy);

    [[nodiscard]] HookSupport hooks() const;

    // The original destination of a connection accepted from `client` (its
    // peer address) in the network namespace with `netns_cookie`.
    [[nodiscard]] std::optional<Origin> origin(std::uint64_t netns_cookie, const proxy::Endpoint& client) const;
    // A read-only descriptor of the origins map, for the unprivileged data
    // plane (issue 24): it may look up and nothing else. Throws
    // std::runtime_error when the kernel refuses one.
    [[nodiscard]] UniqueFd origin_map_readonly() const;

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
