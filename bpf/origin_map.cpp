#include "bpf/origin_map.h"

#include "bpf/tameflare.h"

#include <bpf/bpf.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace tameflare::bpf {

namespace {

proxy::Endpoint to_endpoint(const tf_addr& addr, std::uint16_t port, bool v4) {
    proxy::Endpoint endpoint;
    endpoint.port = port;
    endpoint.address.v4 = v4;
    if (v4) {
        std::memcpy(endpoint.address.bytes.data(), &addr.bytes[12], 4);
    } else {
        std::memcpy(endpoint.address.bytes.data(), addr.bytes, 16);
    }
    return endpoint;
}

tf_origin_key key_of(std::uint64_t netns_cookie, const proxy::Endpoint& client) {
    tf_origin_key key{};
    key.netns_cookie = netns_cookie;
    if (client.address.v4) {
        key.addr.bytes[10] = 0xff;
        key.addr.bytes[11] = 0xff;
        std::memcpy(&key.addr.bytes[12], client.address.bytes.data(), 4);
    } else {
        std::memcpy(key.addr.bytes, client.address.bytes.data(), 16);
    }
    key.port = client.port;
    return key;
}

}  // namespace

std::optional<Origin> OriginMap::lookup(int map_fd, std::uint64_t netns_cookie, const proxy::Endpoint& client) {
    const auto key = key_of(netns_cookie, client);
    tf_origin value{};
    if (bpf_map_lookup_elem(map_fd, &key, &value) != 0) return std::nullopt;
    return Origin{to_endpoint(value.addr, value.port, value.family == AF_INET), value.agent};
}

std::optional<Origin> OriginMap::lookup(std::uint64_t netns_cookie, const proxy::Endpoint& client) const {
    return lookup(map_.get(), netns_cookie, client);
}

bool OriginMap::lookups_permitted() const {
    const tf_origin_key key{};  // cookie 0: no connection has it
    tf_origin value{};
    return bpf_map_lookup_elem(map_.get(), &key, &value) == 0 || errno == ENOENT;
}

}  // namespace tameflare::bpf
