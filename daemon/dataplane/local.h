// The data plane itself: the proxy, the agents' DNS stubs and the origin
// look-up that ties a redirected connection to its agent (issue 24). The
// unprivileged tameflare-dataplane process runs one, driven over its channel
// (serve.h); tests run one in process.
//
// The origin of a connection accepted on an agent's listener is looked up in
// the BPF origins map (through an bpf::OriginSource: a read-only map descriptor,
// or a question to the supervisor) and must name the registration the
// listener was served for; anything else is closed.
#pragma once

#include "bpf/origin_map.h"
#include "daemon/dns/dns_stub.h"
#include "daemon/proxy/data_plane.h"
#include "daemon/proxy/server.h"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace tameflare::dataplane {

// The names an agent of `gateway` may resolve: its connectors' domains and
// the host names of its raw TCP rules.
std::vector<std::string> resolvable_names(const policy::Gateway& gateway);

// The traffic record of a name an agent's DNS stub saw that its gateway's
// policy does not list: "would_deny" where it was answered (monitor, soft),
// "denied" where refused.
proxy::TrafficRecord dns_record(const std::string& gateway, const std::string& agent, const dns::UnlistedName& name);

class LocalDataPlane final : public proxy::DataPlane, public proxy::OriginLookup {
public:
    // `services.config` is required and read for every decision;
    // `services.origins` is this object. Binds or adopts the main listeners
    // (ProxyServer's constructor: throws std::system_error).
    LocalDataPlane(proxy::ProxyOptions options, proxy::ProxyServices services, bpf::OriginSource origins);
    ~LocalDataPlane() override;
    LocalDataPlane(const LocalDataPlane&) = delete;
    LocalDataPlane& operator=(const LocalDataPlane&) = delete;

    void start();
    // Closes the listeners, the stubs and every connection.
    void stop();

    void policy_changed() override;
    void set_kill_switch(const policy::KillSwitch& kill_switch) override { server_->set_kill_switch(kill_switch); }
    [[nodiscard]] policy::KillSwitch kill_switch() const override { return server_->kill_switch(); }
    [[nodiscard]] proxy::ProxyCounters counters() const override { return server_->counters(); }
    void serve_agent(proxy::AgentSockets sockets) override;
    void stop_agent(std::uint64_t tag) override;
    void stop_accepting() override;
    [[nodiscard]] bool responsive(std::chrono::milliseconds timeout) const override;

    std::optional<proxy::Origin> lookup(const proxy::AcceptedConnection& connection) override;

    [[nodiscard]] proxy::ProxyServer& server() { return *server_; }

private:
    struct Agent {
        std::string gateway;
        std::string agent;
        std::unique_ptr<dns::DnsStub> dns;
    };
    void configure(const policy::Config& config, Agent& agent) const;

    policy::ConfigStore& config_;
    bpf::OriginSource origins_;
    mutable boost::asio::io_context io_;  // the DNS stubs' (mutable: responsive() posts to it)
    std::thread thread_;
    // Its resolver answers the stubs: it goes after them.
    std::unique_ptr<proxy::ProxyServer> server_;
    mutable std::mutex mutex_;
    std::map<std::uint64_t, Agent> agents_;  // under mutex_
};

}  // namespace tameflare::dataplane
