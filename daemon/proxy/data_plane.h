// What the supervisor's parts ask of the data plane (the proxy and the
// agents' DNS stubs), wherever it runs: in the unprivileged process of its
// own (dataplane::RemoteDataPlane, issue 24), or in this process
// (dataplane::LocalDataPlane, which that process runs). The control plane
// sets the kill switch and reads the counters; the agents hand over each
// agent's sockets; the supervisor drains and watches it.
#pragma once

#include "common/unique_fd.h"
#include "daemon/proxy/interfaces.h"
#include "policy/engine.h"

#include <chrono>
#include <cstdint>
#include <string>

namespace tameflare::proxy {

// An agent's sockets, made by the supervisor inside the agent's network
// namespace (or redirected to by its BPF registration).
struct AgentSockets {
    std::uint64_t tag = 0;  // the registration: the agent's cgroup id
    std::string gateway;
    std::string agent;
    UniqueFd listener;  // its transparent listener (TCP, listening)
    UniqueFd dns_udp;   // its DNS stub
    UniqueFd dns_tcp;   // listening
};

class DataPlane {
public:
    virtual ~DataPlane() = default;

    // A new policy was published: requests are decided by it and the DNS
    // stubs answer its gateways' names.
    virtual void policy_changed() = 0;
    // Replaces the kill switch: connections in its scope are closed at once
    // and requests in its scope that wait for approval are denied.
    virtual void set_kill_switch(const policy::KillSwitch& kill_switch) = 0;
    [[nodiscard]] virtual policy::KillSwitch kill_switch() const = 0;
    [[nodiscard]] virtual ProxyCounters counters() const = 0;

    // Serves an agent: its connections are its gateway's, its DNS stub
    // answers that gateway's names.
    virtual void serve_agent(AgentSockets sockets) = 0;
    // Closes the agent's listener and stub; its open connections go on.
    virtual void stop_agent(std::uint64_t tag) = 0;

    // The first step of a drain: no new connection is accepted.
    virtual void stop_accepting() = 0;
    // Whether the data plane's event loops answer within `timeout` (the watchdog).
    [[nodiscard]] virtual bool responsive(std::chrono::milliseconds timeout) const = 0;
};

}  // namespace tameflare::proxy
