// What a redirected connection originally dialed, looked up in the pinned
// tf_origins map through a descriptor: the Enforcer's own, or (issue 24) a
// read-only one the supervisor passes to the unprivileged data plane, which
// looks up with bpf(BPF_MAP_LOOKUP_ELEM) and no capability where the kernel
// allows it (lookups_permitted() says; elsewhere the data plane asks the
// supervisor over its channel). Nothing of libbpf shows through this header.
#pragma once

#include "common/address.h"
#include "common/unique_fd.h"

#include <cstdint>
#include <functional>
#include <optional>

namespace tameflare::bpf {

// What the agent dialed, for a connection the proxy accepted.
struct Origin {
    proxy::Endpoint destination;  // an IPv4 destination is v4 even when dialed from an IPv6 socket
    std::uint64_t agent = 0;      // the registration (cgroup id) it was routed by
};

// A look-up wherever it is made: through a descriptor, or (the data plane on
// a kernel that refuses it one) a question to the supervisor.
using OriginSource = std::function<std::optional<Origin>(std::uint64_t netns_cookie, const proxy::Endpoint& client)>;

class OriginMap {
public:
    explicit OriginMap(UniqueFd map) : map_(std::move(map)) {}

    // The original destination of a connection accepted from `client` (its
    // peer address) in the network namespace with `netns_cookie`; nullopt
    // when the map has none (or the look-up is refused).
    [[nodiscard]] std::optional<Origin> lookup(std::uint64_t netns_cookie, const proxy::Endpoint& client) const;
    // Whether this process may look up through the descriptor (a look-up of
    // a key no connection has answers "none" rather than EPERM).
    [[nodiscard]] bool lookups_permitted() const;

    [[nodiscard]] int fd() const { return map_.get(); }

    // The look-up itself, on any tf_origins descriptor.
    static std::optional<Origin> lookup(int map_fd, std::uint64_t netns_cookie, const proxy::Endpoint& client);

private:
    UniqueFd map_;
};

}  // namespace tameflare::bpf
