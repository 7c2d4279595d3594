// The agreed destination, pure: the addresses a request (or tunnel) may be
// sent to, from what the daemon's resolver gives for the name, what the agent
// dialed (a redirected connection goes there and only there, and only if it
// is an address of the name), and the upstream address policy (no loopback,
// private or link-local address unless allowed_upstreams lists it). The
// dialer connects to the first of them that answers. Table-tested in
// tests/daemon/proxy/stage/destination_test.cpp.
#pragma once

#include "common/address.h"

#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace tameflare::proxy::stage {

struct DestinationRefusal {
    std::string reason;
    // false when the agent dialed another address than the name's: its
    // connection is not trusted with a second request.
    bool keep_connection = true;
};

// `resolved`: the resolver's addresses for `host`; `dialed`: what a
// redirected agent connected to (none through the explicit proxy).
std::variant<std::vector<IpAddress>, DestinationRefusal> agree_destination(const std::string& host,
                                                                           std::vector<IpAddress> resolved,
                                                                           const std::optional<IpAddress>& dialed,
                                                                           const std::vector<Cidr>& allowed_upstreams);

}  // namespace tameflare::proxy::stage
