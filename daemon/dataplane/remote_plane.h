// The data plane seen from the supervisor (issue 24): the unprivileged
// tameflare-dataplane process behind proxy::DataPlane. The supervisor keeps
// every listening socket (the main listeners, each agent's listener and DNS
// sockets) and passes the process duplicates, so that when it dies the ports
// stay bound here: connections wait in the backlog (or fail, for those in
// flight) and none reaches anything but a data plane. A watcher thread sees
// the exit on the pidfd, says why in the journal, lets the supervisor
// withdraw what the dead one held (on_lost), and starts another told the
// same: the policy, the kill switch, the listeners and every agent.
#pragma once

#include "bpf/origin_map.h"
#include "daemon/dataplane/host.h"
#include "daemon/dataplane/process.h"
#include "daemon/proxy/data_plane.h"
#include "daemon/proxy/server.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace tameflare::dataplane {

struct RemoteDataPlaneOptions {
    DataPlaneOptions process;
    // The listeners are bound here from the endpoints (or adopted from
    // transparent_socket / explicit_socket); the rest is sent as Start.
    proxy::ProxyOptions proxy;
    policy::ConfigStore* config = nullptr;  // required: the policy each data plane is sent
    HostServices host;                      // what its requests are answered from
    // A read-only descriptor of the origins map for each data plane; null: none.
    std::function<UniqueFd()> origin_map;
    // A data plane ended unasked (on the watcher's thread), before the next
    // starts: what it held is withdrawn.
    std::function<void(const std::string& why)> on_lost;
};

class RemoteDataPlane final : public proxy::DataPlane {
public:
    // Binds the listeners: throws std::system_error.
    explicit RemoteDataPlane(RemoteDataPlaneOptions options);
    ~RemoteDataPlane() override;
    RemoteDataPlane(const RemoteDataPlane&) = delete;
    RemoteDataPlane& operator=(const RemoteDataPlane&) = delete;

    // Starts the process and its watcher. Throws DataPlaneError when the
    // first one cannot start or dies at once.
    void start();
    // Ends the process (and the watcher); the listeners stay until destruction.
    void stop();

    [[nodiscard]] std::optional<Endpoint> transparent_endpoint() const { return transparent_endpoint_; }
    [[nodiscard]] std::optional<Endpoint> explicit_endpoint() const { return explicit_endpoint_; }
    // The running data plane's pid (0: none), and how many were started.
    [[nodiscard]] pid_t pid() const;
    [[nodiscard]] unsigned started() const { return started_.load(); }

    void policy_changed() override;
    void set_kill_switch(const policy::KillSwitch& kill_switch) override;
    [[nodiscard]] policy::KillSwitch kill_switch() const override;
    [[nodiscard]] proxy::ProxyCounters counters() const override;
    void serve_agent(proxy::AgentSockets sockets) override;
    void stop_agent(std::uint64_t tag) override;
    void stop_accepting() override;
    // The process answers a Ping (which it does only while its loops answer).
    [[nodiscard]] bool responsive(std::chrono::milliseconds timeout) const override;

private:
    struct Running;
    struct Agent {
        std::string gateway;
        std::string agent;
        UniqueFd listener;
        UniqueFd dns_udp;
        UniqueFd dns_tcp;
    };

    // A new process, told everything. Throws DataPlaneError.
    std::shared_ptr<Running> launch();
    [[nodiscard]] std::shared_ptr<Running> current() const;
    void watch();
    void send_policy(Running& running);
    static void send_agent(Running& running, std::uint64_t tag, const Agent& agent);

    RemoteDataPlaneOptions options_;
    UniqueFd transparent_;
    UniqueFd explicit_;
    std::optional<Endpoint> transparent_endpoint_;
    std::optional<Endpoint> explicit_endpoint_;

    mutable std::mutex mutex_;
    std::shared_ptr<Running> running_;            // under mutex_
    policy::KillSwitch kill_;                     // under mutex_
    std::map<std::uint64_t, Agent> agents_;       // under mutex_
    bool accepting_ = true;                       // under mutex_
    std::uint32_t generation_ = 0;                // under mutex_: the policy's
    mutable proxy::ProxyCounters last_counters_;  // under mutex_
    std::atomic<unsigned> started_{0};
    UniqueFd stop_event_;  // eventfd: the watcher's signal to end
    std::thread watcher_;
};

}  // namespace tameflare::dataplane
