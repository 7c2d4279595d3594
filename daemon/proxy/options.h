// How the proxy serves: its listeners, threads, limits, upstream trust and
// resolution, timeouts. Plain data (no asio), so that the supervisor can
// send it to the data plane (daemon/dataplane/protocol.h).
#pragma once

#include "common/address.h"

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::proxy {

struct ProxyOptions {
    std::optional<Endpoint> transparent_listen;  // port 0: the kernel picks
    std::optional<Endpoint> explicit_listen;
    // Listening sockets made elsewhere (the supervisor, for the data plane:
    // issue 24), served instead of binding the endpoints above. The proxy
    // serves a duplicate: the caller keeps its own, so that a restarted
    // proxy gets the same listener with no moment another process could
    // bind the port. -1: none.
    int transparent_socket = -1;
    int explicit_socket = -1;
    unsigned threads = 0;  // 0: one per core
    // Body bytes read to extract parameters; past it the request is decided
    // on what was read (parameters incomplete) and the rest is streamed.
    std::size_t max_body_bytes = std::size_t{1} << 20;
    std::vector<Cidr> allowed_upstreams;  // non-global destinations that may be reached
    std::string upstream_ca_file;         // "" : the system trust store
    // The upstream CAs themselves (PEM), in place of the file: the data plane
    // is sent the file's descriptor, for it may not open it (issue 24).
    std::string upstream_ca_pem;
    std::map<std::string, std::vector<IpAddress>> hosts;  // static resolver overrides
    bool system_resolver = true;
    std::chrono::seconds client_idle_timeout{120};      // between requests, and for a first byte
    std::chrono::seconds upstream_timeout{600};         // connect, handshake, each read
    std::chrono::milliseconds server_first_wait{1000};  // silence before a raw TCP rule applies
};

}  // namespace tameflare::proxy
