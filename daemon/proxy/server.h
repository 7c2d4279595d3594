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
#include "daemon/proxy/options.h"
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

struct ProxyServices {
    policy::ConfigStore* config = nullptr;    // required
    LeafSource* ca = nullptr;                 // required: the certificates interception presents
    OriginLookup* origins = nullptr;          // required for the transparent listener
    CredentialSource* credentials = nullptr;  // null: no credential is available
    ApprovalBroker* approvals = nullptr;      // null: held requests time out
    TrafficSink* traffic = nullptr;           // null: records are dropped
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
