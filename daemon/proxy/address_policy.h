// Which upstream addresses the proxy may connect to. An allowed name that
// resolves to 127.0.0.1, a private network or the cloud metadata address must
// not become a way into the host or its network: such destinations are refused
// unless the configuration names them. IPv4 addresses embedded in IPv6
// (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the
// IPv4 address they carry.
#pragma once

#include "common/address.h"

#include <string_view>
#include <vector>

namespace tameflare::proxy {

enum class AddressClass {
    global,       // ordinary public unicast
    loopback,     // 127.0.0.0/8, ::1
    private_net,  // 10/8, 172.16/12, 192.168/16, fc00::/7
    shared,       // 100.64.0.0/10 (carrier-grade NAT)
    link_local,   // 169.254/16 (cloud metadata), fe80::/10
    unspecified,  // 0.0.0.0/8, ::
    multicast,    // 224/4, ff00::/8, 255.255.255.255
    reserved,     // 240/4, documentation and benchmarking ranges, 192.0.0.0/24
};

std::string_view to_string(AddressClass value) noexcept;

// The class of an address; IPv6 forms that carry an IPv4 address are judged
// by that address.
AddressClass classify(const IpAddress& address);

// Global addresses are always allowed; any other needs a configured CIDR
// that contains it (an IPv4 CIDR also covers the IPv6 forms that carry it).
bool upstream_allowed(const IpAddress& address, const std::vector<Cidr>& allowed);

}  // namespace tameflare::proxy
