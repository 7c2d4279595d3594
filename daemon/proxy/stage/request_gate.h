// The request gate: the first stage of every request the proxy reads, pure
// (no sockets, no clock). Where a request may go is settled here from what
// the connection already established (its gateway, the TLS server name or
// CONNECT target it was verified for, the port the agent dialed) and what
// the request says (its target and Host header), or it is refused with the
// response the proxy writes itself. Also the explicit proxy's login
// (Proxy-Authorization) and CONNECT's own gate. Table-tested in
// tests/daemon/proxy/stage/request_gate_test.cpp.
#pragma once

#include "policy/config.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tameflare::proxy::stage {

// How a client connection reached the proxy.
enum class Mode {
    transparent,      // redirected by the kernel; the destination is what the agent dialed
    explicit_plain,   // HTTP_PROXY-style absolute-form requests
    explicit_tunnel,  // inside a CONNECT tunnel
};

// A response the proxy writes itself instead of forwarding.
struct Refusal {
    unsigned status = 403;
    std::string error;   // a short code for what is not a policy decision ("bad_request"); "" for a decision
    std::string hint;    // how to fix it, sent with `error`
    std::string reason;  // recorded, and sent as the message
    std::vector<std::pair<std::string, std::string>> headers;
    std::string host;  // the request's host when it was known before the refusal, for the record
};

// "host", "host:port", "[v6]", "[v6]:port" -> lower-case host and port.
struct HostPort {
    std::string host;
    std::optional<std::uint16_t> port;
};
std::optional<HostPort> split_host_port(std::string_view text);

// What the connection settled before this request.
struct ConnectionFacts {
    Mode mode = Mode::transparent;
    std::string_view verified_name;  // the TLS server name or CONNECT host; "" when none
    bool tls = false;
    std::uint16_t port = 0;  // the destination port
};

// What the request says about where it goes.
struct RequestFacts {
    std::string_view method;
    std::string_view target;  // as sent: origin-form, or absolute-form to the explicit proxy
    std::string_view host;    // the Host header, "" when missing
};

// Where an admitted request goes.
struct Target {
    std::string host;  // lower case
    std::uint16_t port = 0;
    std::string path;                 // origin-form
    bool from_absolute_form = false;  // the explicit proxy's target was rewritten to `path`
};

std::variant<Target, Refusal> gate_request(const ConnectionFacts& connection, const RequestFacts& request);

// The explicit proxy's login: the gateway a Proxy-Authorization header names
// (Basic, <gateway>:<token>, the token's SHA-256 compared in constant time),
// which must be `bound_gateway` when the connection already has one.
std::variant<std::string, Refusal> explicit_login(const policy::Config& config,
                                                  std::optional<std::string_view> proxy_authorization,
                                                  std::string_view bound_gateway = {});

// CONNECT's gate, after the login: a host:port target and nothing sent
// before the reply. The tunnel's target, or the refusal (its status is what
// the reply says; the connection closes).
struct TunnelTarget {
    std::string host;
    std::uint16_t port = 0;
};
std::variant<TunnelTarget, Refusal> gate_connect(std::string_view target, std::size_t bytes_before_reply);

}  // namespace tameflare::proxy::stage
