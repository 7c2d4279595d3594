// tameflared's composition root: the daemon's parts brought up in named
// stages, each stage owning what it creates, and stopped in reverse.
//
//   load_configuration  tameflared.json and the policy files (refused when invalid)
//   open_state          the interception CA, the state directory and its lock, the store, the vault,
//                       and the store and live events seen through the proxy's interfaces
//   start_kernel_side   the agents: BPF on the cgroup root, cgroups (optional: without it the
//                       daemon serves the explicit proxy and launches nothing)
//   open_data_plane     the proxy's listeners, bound here and served by the unprivileged
//                       tameflare-dataplane process (issue 24), answered from the stages before it
//   open_control_plane  the durable kill switch re-applied, the control plane's operations
//   start_data_plane    the data plane process, told the policy, the kill switch and the listeners
//   open_front_ends     the REST socket, D-Bus
//   start_serving       every part serving, then READY=1
//   loop                signals (SIGHUP reloads), STATUS= and the watchdog
//   stop                drain, then the front ends, the agents and the proxy stopped
//
// The members are declared in the order the stages create them, so the
// destructor takes them down in reverse. A stage that fails has logged why;
// run() then returns EXIT_FAILURE, and what was created goes with the Supervisor.
#pragma once

#include "daemon/daemon_config.h"
#include "daemon/store/state_lock.h"
#include "policy/config.h"

#include <signal.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace tameflare::proxy {
class ApprovalQueue;
class CertificateAuthority;
}  // namespace tameflare::proxy
namespace tameflare::dataplane {
class RemoteDataPlane;
}
namespace tameflare::store {
class Store;
class Vault;
}  // namespace tameflare::store
namespace tameflare::control {
class Control;
class KillSwitchControl;
}  // namespace tameflare::control
namespace tameflare::api {
class ApiServer;
}
namespace tameflare::dbus {
class BusService;
}

namespace tameflare::daemon {

class Agents;

// "N connectors, M gateways" and a line per gateway (tf --check-config, the started record).
std::string summary(const policy::Config& config);

class Supervisor {
public:
    explicit Supervisor(ConfigLocation location);
    ~Supervisor();
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    // Runs the daemon until SIGTERM or SIGINT: EXIT_SUCCESS after a clean
    // stop, EXIT_FAILURE when a stage could not start.
    int run();

private:
    // The proxy's approvals and records on their way to the store, through
    // the control plane's observers (live events, metrics); the vault's
    // credentials (supervisor.cpp).
    struct Bindings;

    bool load_configuration();
    bool open_state();
    void start_kernel_side();
    bool open_data_plane();
    void open_control_plane();
    bool start_data_plane();
    bool open_front_ends();
    bool start_serving();
    void loop();
    void stop();

    // STATUS= for systemctl status.
    [[nodiscard]] std::string status_line() const;

    ConfigLocation location_;
    sigset_t signals_{};  // SIGHUP, SIGTERM, SIGINT: blocked, taken by loop()

    // load_configuration
    std::optional<DaemonConfig> config_;
    policy::ConfigStore policy_;
    // open_state
    std::unique_ptr<proxy::CertificateAuthority> ca_;
    std::optional<store::StateLock> lock_;
    std::unique_ptr<store::Store> database_;
    std::unique_ptr<store::Vault> vault_;
    std::unique_ptr<Bindings> bindings_;
    // start_kernel_side (null: kernel enforcement is off)
    std::unique_ptr<Agents> agents_;
    std::filesystem::path agents_root_;  // "" : no agents
    bool delegated_ = false;             // agents_root_ is <unit>/agents (Delegate=yes)
    // open_data_plane
    std::filesystem::path dataplane_cgroup_;
    // The cgroup made for it, removed once it is gone (declared before it, so destroyed after).
    struct RemovedCgroup {
        std::filesystem::path path;
        RemovedCgroup() = default;
        RemovedCgroup(const RemovedCgroup&) = delete;
        RemovedCgroup& operator=(const RemovedCgroup&) = delete;
        ~RemovedCgroup();
    } removed_cgroup_;
    std::unique_ptr<dataplane::RemoteDataPlane> server_;
    // open_control_plane
    std::unique_ptr<control::KillSwitchControl> kill_switch_;
    std::unique_ptr<control::Control> control_;
    // open_front_ends (null: disabled, or D-Bus unavailable)
    std::unique_ptr<api::ApiServer> api_server_;
    std::unique_ptr<dbus::BusService> bus_service_;
};

}  // namespace tameflare::daemon
