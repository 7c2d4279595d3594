// The per-agent DNS stub. The agent's UDP and TCP port-53 traffic ends here
// (the socket lives in the agent's network namespace, or the BPF programs
// redirect to it). It answers only names the agent's gateway could use, with
// the daemon's own resolution, and REFUSES every other name without any
// upstream query, so DNS cannot carry data out (a monitor or soft gateway's
// stub answers them, and reports each). It remembers which name it
// gave each address for, so the proxy can check a redirected connection's
// destination against the name the agent sent.
#pragma once

#include "common/unique_fd.h"
#include "daemon/dns/dns_message.h"
#include "daemon/proxy/asio.h"
#include "daemon/proxy/resolver.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::dns {

namespace net = boost::asio;

// Where the stub gets addresses from. The daemon uses ProxyNameResolver; the
// tests count lookups with a fake to prove that refused names cause none.
class NameResolver {
public:
    virtual ~NameResolver() = default;
    // Every address of `name` (both families). Empty: the name does not
    // exist (NXDOMAIN); nullopt: the lookup failed (SERVFAIL).
    virtual net::awaitable<std::optional<std::vector<proxy::IpAddress>>> resolve(std::string name) = 0;
    // Called with each answer the stub gives out.
    virtual void remember(const std::string& name, const std::vector<proxy::IpAddress>& addresses) = 0;
};

// proxy::Resolver as a NameResolver. proxy::Resolver cannot tell "no such
// name" from "lookup failed", so no addresses become SERVFAIL: a client
// retries a failure, while an NXDOMAIN could be cached against a name that
// exists.
class ProxyNameResolver final : public NameResolver {
public:
    explicit ProxyNameResolver(proxy::Resolver& resolver) : resolver_(resolver) {}
    net::awaitable<std::optional<std::vector<proxy::IpAddress>>> resolve(std::string name) override;
    void remember(const std::string& name, const std::vector<proxy::IpAddress>& addresses) override;

private:
    proxy::Resolver& resolver_;
};

// A name the gateway's policy does not list, as the stub saw it: answered
// (a monitor or soft gateway) or refused. `suppressed` counts the unlisted
// queries not reported since the previous report (the budget below).
struct UnlistedName {
    std::string name;
    std::uint16_t type = 0;  // the query type (1 A, 28 AAAA, ...)
    bool answered = false;
    std::uint64_t suppressed = 0;
};

struct DnsStubCounters {
    std::uint64_t queries = 0;    // well-formed queries received (UDP and TCP)
    std::uint64_t answered = 0;   // NOERROR / NXDOMAIN responses for allowed names
    std::uint64_t refused = 0;    // names not allowed: REFUSED, nothing looked up
    std::uint64_t malformed = 0;  // packets dropped (UDP) or connections closed (TCP) for bad framing/content
    std::uint64_t failed = 0;     // SERVFAIL: an allowed name whose lookup failed
};

class DnsStub {
public:
    static constexpr std::chrono::seconds kTcpIdleTimeout{10};
    static constexpr std::size_t kMaxTcpClients = 64;
    static constexpr std::size_t kMaxTcpMessage = 4096;
    static constexpr std::size_t kMaxRemembered = 4096;
    static constexpr std::size_t kMaxUdpInFlight = 256;  // queries being resolved at once; more are dropped
    // Unlisted names are reported once per name per window, and at most
    // kUnlistedBudget names per window: a flood of made-up names (DNS used
    // to carry data out) cannot flood the traffic log.
    static constexpr std::chrono::seconds kUnlistedWindow{60};
    static constexpr std::size_t kUnlistedBudget = 60;

    // `udp` and `tcp` are sockets already bound (and `tcp` listening) by the
    // caller, possibly inside another network namespace; either may be empty
    // (not served). `allowed` are name patterns (dns::name_allowed). Answers
    // are served on `io`. `resolver` must outlive the stub.
    DnsStub(net::io_context& io, UniqueFd udp, UniqueFd tcp, std::vector<std::string> allowed,
            proxy::Resolver& resolver, std::uint32_t ttl = 30);
    // The same with any NameResolver (tests: a counting fake). It must outlive the stub.
    DnsStub(net::io_context& io, UniqueFd udp, UniqueFd tcp, std::vector<std::string> allowed, NameResolver& resolver,
            std::uint32_t ttl = 30);
    DnsStub(const DnsStub&) = delete;
    DnsStub& operator=(const DnsStub&) = delete;
    // stop(), then waits until every coroutine of the stub has finished, so
    // the resolver is no longer used. Safe while `io` runs on other threads
    // and after `io` stopped. Called on one of `io`'s threads it cannot wait:
    // the coroutines end on their own shortly after (they own what they use).
    ~DnsStub();

    // Starts serving. Call once.
    void start();
    // Closes the sockets and every TCP client; pending work ends with
    // operation_aborted. Idempotent, thread-safe, returns without waiting.
    void stop();
    // Config reload (thread-safe): applies to queries received from now on.
    void set_allowed(std::vector<std::string> allowed);
    // Whether names outside `allowed` are answered too (a monitor or soft
    // gateway: the admin must see the traffic a policy would deny), or
    // REFUSED without any lookup (full, the default). Thread-safe.
    void set_answer_unlisted(bool answer);
    // Called (on the stub's strand; it must not block) with each unlisted
    // name, within the budget above. Set before start().
    void on_unlisted(std::function<void(const UnlistedName&)> observer);
    DnsStubCounters counters() const;  // thread-safe
    // The name this stub last answered with `address`, if any. Entries
    // expire after ttl*2, and beyond kMaxRemembered the oldest go first.
    std::optional<std::string> name_for(const proxy::IpAddress& address) const;

    struct State;  // shared with the coroutines (defined in dns_stub.cpp)

private:
    std::unique_ptr<ProxyNameResolver> adapter_;  // only when built from a proxy::Resolver
    std::shared_ptr<State> state_;
};

}  // namespace tameflare::dns
