#include "common/address.h"

#include <arpa/inet.h>

#include <algorithm>

namespace tameflare {

std::optional<IpAddress> embedded_v4(const IpAddress& address) {
    if (address.v4) return std::nullopt;
    const auto& b = address.bytes;
    IpAddress v4;
    v4.v4 = true;
    const auto zero = [&](std::size_t from, std::size_t to) {
        return std::all_of(b.begin() + static_cast<std::ptrdiff_t>(from), b.begin() + static_cast<std::ptrdiff_t>(to),
                           [](std::uint8_t x) { return x == 0; });
    };
    if (zero(0, 10) && b[10] == 0xff && b[11] == 0xff) {  // ::ffff:a.b.c.d
        std::copy(b.begin() + 12, b.end(), v4.bytes.begin());
        return v4;
    }
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(4, 12)) {  // 64:ff9b::/96
        std::copy(b.begin() + 12, b.end(), v4.bytes.begin());
        return v4;
    }
    if (b[0] == 0x20 && b[1] == 0x02) {  // 2002:AABB:CCDD::/48
        std::copy(b.begin() + 2, b.begin() + 6, v4.bytes.begin());
        return v4;
    }
    if (zero(0, 12) && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1)) {  // ::a.b.c.d (deprecated)
        std::copy(b.begin() + 12, b.end(), v4.bytes.begin());
        return v4;
    }
    return std::nullopt;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    std::string owned(text);
    if (owned.size() > 2 && owned.front() == '[' && owned.back() == ']') owned = owned.substr(1, owned.size() - 2);
    IpAddress address;
    if (inet_pton(AF_INET, owned.c_str(), address.bytes.data()) == 1) {
        address.v4 = true;
        return address;
    }
    if (inet_pton(AF_INET6, owned.c_str(), address.bytes.data()) == 1) return address;
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text);
    return text;
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
    const auto slash = text.find('/');
    const auto address = IpAddress::parse(text.substr(0, slash));
    if (!address) return std::nullopt;
    const unsigned width = address->v4 ? 32 : 128;
    unsigned prefix = width;
    if (slash != std::string_view::npos) {
        const std::string_view digits = text.substr(slash + 1);
        if (digits.empty() || digits.size() > 3 ||
            !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return std::nullopt;
        }
        prefix = static_cast<unsigned>(std::stoul(std::string(digits)));
        if (prefix > width) return std::nullopt;
    }
    return Cidr{*address, prefix};
}

bool Cidr::contains(const IpAddress& address) const {
    if (address.v4 != network.v4) return false;
    const unsigned full = prefix / 8;
    if (!std::equal(network.bytes.begin(), network.bytes.begin() + full, address.bytes.begin())) return false;
    const unsigned rest = prefix % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (network.bytes[full] & mask) == (address.bytes[full] & mask);
}

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
        const auto close = text.find("]:");
        if (close == std::string_view::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    auto address = IpAddress::parse(host);
    if (!address || (text.starts_with('[') && address->v4)) return std::nullopt;
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) {
        return std::nullopt;
    }
    const unsigned long value = std::stoul(std::string(port));
    if (value > 65535) return std::nullopt;
    return Endpoint{*address, static_cast<std::uint16_t>(value)};
}

std::string Endpoint::to_string() const {
    const auto text = address.to_string();
    return (address.v4 ? text : "[" + text + "]") + ":" + std::to_string(port);
}

}  // namespace tameflare
