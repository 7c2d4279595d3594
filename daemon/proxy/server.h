// The proxy: listeners, protocol detection, TLS interception, the policy
// decision for every request, credential injection and forwarding.
//
// Two listeners. The transparent one takes connections the kernel redirected;
// their original destination and owner come from an OriginLookup. The
// explicit one is an ordinary HTTP proxy (absolute-form requests and CONNECT)
// for hosts without the kernel mode; the gateway is named by
// Proxy-Authorization: Basic <gateway>:<token>.
//
// A fixed pool of threads, one io_context each; every connection is a
// coroutine on one of them, so nothing blocks a thread and a held request
// costs memory, not a thread.
#pragma once

#include "common/unique_fd.h"
#include "daemon/proxy/address_policy.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/interfaces.h"
#include "policy/config.h"
#include "policy/engine.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::proxy {

class Resolver;

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
    std::vector<Cidr> allowed_upstreams;                  // non-global destinations that may be reached
    std::string upstream_ca_file;                         // "" : the system trust store
    std::map<std::string, std::vector<IpAddress>> hosts;  // static resolver overrides
    bool system_resolver = true;
    std::chrono::seconds client_idle_timeout{120};      // between requests, and for a first byte
    std::chrono::seconds upstream_timeout{600};         // connect, handshake, each read
    std::chrono::milliseconds server_first_wait{1000};  // silence before a raw TCP rule applies
};

struct ProxyServices {
    policy::ConfigStore* config = nullptr;    // required
    LeafSource* ca = nullptr;                 // required: the certificates interception presents
    OriginLookup* origins = nullptr;          // required for the transparent listener
    CredentialSource* credentials = nullptr;  // null: no credential is available
    ApprovalBroker* approvals = nullptr;      // null: held requests time out
    TrafficSink* traffic = nullptr;           // null: records are dropped
};

struct ProxyCounters {
    std::uint64_t connections_open = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t requests = 0;
    std::uint64_t held = 0;  // requests waiting for approval now
};

class ProxyServer {
public:
    // Binds the listeners; throws std::system_error when one cannot be bound.
    ProxyServer(ProxyOptions options, ProxyServices services);
    ~ProxyServer();
    ProxyServer(const ProxyServer&) = delete;
    ProxyServer& operator=(const ProxyServer&) = delete;

    // Starts the threads. stop() closes the listeners and every connection and
    // joins them (also done by the destructor).
    void start();
    void stop();

    // Serves another transparent listener: a listening TCP socket made
    // elsewhere (inside an agent's network namespace, say). Connections it
    // accepts reach the OriginLookup with `tag` (not 0). Thread-safe.
    void add_listener(UniqueFd listening_socket, std::uint64_t tag);
    // Closes the listeners added with `tag`; their open connections go on.
    void remove_listener(std::uint64_t tag);

    [[nodiscard]] std::optional<Endpoint> transparent_endpoint() const;
    [[nodiscard]] std::optional<Endpoint> explicit_endpoint() const;

    // Replaces the kill switch. Connections in its scope are closed at once
    // and requests in its scope that wait for approval are denied.
    void set_kill_switch(const policy::KillSwitch& kill_switch);
    [[nodiscard]] policy::KillSwitch kill_switch() const;

    [[nodiscard]] ProxyCounters counters() const;
    // Writes a record the proxy did not make itself (an agent's DNS stub
    // reporting a name) to the traffic log, with a request id of its own.
    void record(TrafficRecord record);
    // Closes the listeners (the first step of a drain); open connections
    // are served on until stop().
    void stop_accepting();
    // Whether every event loop runs a posted handler within `timeout`
    // (the watchdog). True when not started.
    [[nodiscard]] bool responsive(std::chrono::milliseconds timeout) const;
    // The proxy's resolver (overrides, cache): the DNS stubs answer from it,
    // so the addresses agents get are the ones the proxy checks against.
    [[nodiscard]] Resolver& resolver();

    struct Impl;

private:
    std::shared_ptr<Impl> impl_;
};

// The path with the values of secret-looking query parameters (token, key,
// secret, password, signature, code, ...) replaced by "REDACTED".
std::string redact_target(std::string_view target);

}  // namespace tameflare::proxy
