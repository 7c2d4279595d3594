// IP addresses, endpoints and address ranges: the vocabulary every part that
// speaks to the network uses (the proxy, the BPF enforcer, the namespaces, the
// DNS stub). Parsing and printing only; which addresses the proxy may reach
// is daemon/proxy/address_policy.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tameflare {

struct IpAddress {
    std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4 bytes
    bool v4 = false;

    static std::optional<IpAddress> parse(std::string_view text);
    [[nodiscard]] std::string to_string() const;
    [[nodiscard]] bool operator==(const IpAddress&) const = default;
};

// An address and a port.
struct Endpoint {
    IpAddress address;
    std::uint16_t port = 0;
    // "127.0.0.1:15080" or "[::1]:15080".
    static std::optional<Endpoint> parse(std::string_view text);
    [[nodiscard]] std::string to_string() const;
    [[nodiscard]] bool operator==(const Endpoint&) const = default;
};

struct Cidr {
    IpAddress network;
    unsigned prefix = 0;

    // "10.1.0.0/16", "fd00::/8", or a single address ("127.0.0.7").
    static std::optional<Cidr> parse(std::string_view text);
    [[nodiscard]] bool contains(const IpAddress& address) const;
};

// The IPv4 address an IPv6 address carries, if it is one of the forms that
// deliver to IPv4: mapped (::ffff:a.b.c.d), NAT64's well-known prefix
// (64:ff9b::/96), 6to4 (2002::/16), IPv4-compatible (::a.b.c.d).
std::optional<IpAddress> embedded_v4(const IpAddress& address);

}  // namespace tameflare

// Transitional: the proxy's code still says proxy::IpAddress (issue 23 moves
// the uses to the plain names).
namespace tameflare::proxy {
using tameflare::Cidr;
using tameflare::Endpoint;
using tameflare::IpAddress;
}  // namespace tameflare::proxy
