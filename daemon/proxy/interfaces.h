// What the proxy needs from the rest of the daemon, as small interfaces: who
// owns a redirected connection (the BPF maps, later), credentials (the vault),
// a human's answer (the control plane) and where records go (the store). Tests
// implement each one directly.
#pragma once

#include "daemon/proxy/address_policy.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace tameflare::proxy {

// The owner and original destination of a connection the kernel redirected.
struct Origin {
    Endpoint destination;  // what the agent dialed
    std::string gateway;
    std::string agent;
};

// A connection a transparent listener accepted.
struct AcceptedConnection {
    Endpoint client;             // the peer
    Endpoint local;              // the listener's address
    int socket = -1;             // the accepted socket, to ask the kernel about (not to read or close)
    std::uint64_t listener = 0;  // 0: the main transparent listener; else the tag it was added with
};

class OriginLookup {
public:
    virtual ~OriginLookup() = default;
    // nullopt: the connection was not redirected by us (it is closed).
    virtual std::optional<Origin> lookup(const AcceptedConnection& connection) = 0;
};

// The vault, seen from the data path: a credential's value by name. Called
// on the proxy's threads; must not block on disk for long.
class CredentialSource {
public:
    virtual ~CredentialSource() = default;
    virtual std::optional<std::string> credential(std::string_view name) = 0;
};

struct ApprovalRequest {
    std::string id;  // the request id
    std::string gateway;
    std::string agent;
    std::string connector;
    std::string action;
    std::string risk;
    std::string parameters;  // JSON text
    std::string reason;      // why approval is required
    std::chrono::system_clock::time_point requested_at;
    std::chrono::seconds timeout{0};
};

struct ApprovalAnswer {
    bool approved = false;
    std::string note;   // the human's note, or why it was denied automatically
    std::string actor;  // who answered ("uid:1000 pid:42 via D-Bus"); empty: tameflared itself
};

// Where held requests wait for a human. submit() must return at once; the
// broker calls `answer` exactly once, on any thread, unless withdraw() came
// first (the request timed out or its connection went away).
class ApprovalBroker {
public:
    virtual ~ApprovalBroker() = default;
    virtual void submit(const ApprovalRequest& request, std::function<void(ApprovalAnswer)> answer) = 0;
    virtual void withdraw(std::string_view id) = 0;
};

// One record per request or refused connection: metadata only, never a body,
// an Authorization or Cookie value, or a secret query value.
struct TrafficRecord {
    std::chrono::system_clock::time_point time;
    std::string request_id;
    std::string gateway;
    std::string agent;
    std::string connector;
    std::string action;
    std::string method;
    std::string host;
    std::string path;      // query values of secret-looking parameters redacted
    std::string decision;  // the X-TameFlare-Decision label, or "error"
    std::string reason;
    unsigned status = 0;  // the status the agent got; 0 when the connection was closed
    std::uint64_t request_bytes = 0;
    std::uint64_t response_bytes = 0;
    std::chrono::microseconds latency{0};
    // From the request head to the moment it went upstream: the decision,
    // the durable log row, the upstream connect. 0 when not forwarded.
    std::chrono::microseconds overhead{0};
    bool forwarded = false;  // the request reached the upstream
};

// What the proxy has served (the status, STATUS=, the metrics).
struct ProxyCounters {
    std::uint64_t connections_open = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t requests = 0;
    std::uint64_t held = 0;  // requests waiting for approval now
};

class TrafficSink {
public:
    virtual ~TrafficSink() = default;
    // Called on the proxy's threads; must not block.
    virtual void record(TrafficRecord record) = 0;
    // Called before a request is forwarded, with the record as decided so
    // far (forwarded set, status 0). `done` is called exactly once, on any
    // thread, with "" once the record is durable or with why it cannot be;
    // the proxy forwards only after "". A later record() with the same
    // request id completes the row. The default keeps nothing durable.
    // By value: an override keeps the record (the store moves it into its row).
    virtual void commit(TrafficRecord /*record*/,  // NOLINT(performance-unnecessary-value-param)
                        std::function<void(std::string error)> done) {
        const auto call = std::move(done);
        call({});
    }
};

}  // namespace tameflare::proxy
