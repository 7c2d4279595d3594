#include "daemon/proxy/address_policy.h"

#include <algorithm>

namespace tameflare::proxy {

namespace {

struct Range {
    Cidr cidr;
    AddressClass kind;
};

// Special-purpose ranges (RFC 6890 and its updates), most specific first
// where they overlap.
const std::vector<Range>& special_ranges() {
    static const std::vector<Range> ranges = [] {
        const std::pair<const char*, AddressClass> table[] = {
            {"0.0.0.0/8", AddressClass::unspecified},
            {"127.0.0.0/8", AddressClass::loopback},
            {"10.0.0.0/8", AddressClass::private_net},
            {"172.16.0.0/12", AddressClass::private_net},
            {"192.168.0.0/16", AddressClass::private_net},
            {"100.64.0.0/10", AddressClass::shared},
            {"169.254.0.0/16", AddressClass::link_local},
            {"255.255.255.255/32", AddressClass::multicast},
            {"224.0.0.0/4", AddressClass::multicast},
            {"240.0.0.0/4", AddressClass::reserved},
            {"192.0.0.0/24", AddressClass::reserved},
            {"192.0.2.0/24", AddressClass::reserved},
            {"198.18.0.0/15", AddressClass::reserved},
            {"198.51.100.0/24", AddressClass::reserved},
            {"203.0.113.0/24", AddressClass::reserved},
            {"::/128", AddressClass::unspecified},
            {"::1/128", AddressClass::loopback},
            {"fc00::/7", AddressClass::private_net},
            {"fe80::/10", AddressClass::link_local},
            {"ff00::/8", AddressClass::multicast},
            {"2001:db8::/32", AddressClass::reserved},
            {"100::/64", AddressClass::reserved},
            {"::/8", AddressClass::reserved},
        };
        std::vector<Range> out;
        for (const auto& [text, kind] : table) out.push_back({*Cidr::parse(text), kind});
        return out;
    }();
    return ranges;
}

AddressClass lookup(const IpAddress& address) {
    for (const auto& range : special_ranges()) {
        if (range.cidr.contains(address)) return range.kind;
    }
    return AddressClass::global;
}

}  // namespace

std::string_view to_string(AddressClass value) noexcept {
    switch (value) {
        case AddressClass::global: return "global";
        case AddressClass::loopback: return "loopback";
        case AddressClass::private_net: return "private";
        case AddressClass::shared: return "shared (CGNAT)";
        case AddressClass::link_local: return "link-local";
        case AddressClass::unspecified: return "unspecified";
        case AddressClass::multicast: return "multicast";
        case AddressClass::reserved: return "reserved";
    }
    return "reserved";
}

AddressClass classify(const IpAddress& address) {
    if (const auto v4 = embedded_v4(address)) return lookup(*v4);
    return lookup(address);
}

bool upstream_allowed(const IpAddress& address, const std::vector<Cidr>& allowed) {
    if (classify(address) == AddressClass::global) return true;
    const auto v4 = embedded_v4(address);
    return std::any_of(allowed.begin(), allowed.end(),
                       [&](const Cidr& cidr) { return cidr.contains(address) || (v4 && cidr.contains(*v4)); });
}

}  // namespace tameflare::proxy
