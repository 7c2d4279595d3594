// The control plane's operations, shared by every front end (the REST socket,
// D-Bus, and through REST the tf command). Each operation takes the Caller as
// the kernel reported it and authorizes it here, so no front end can forget a
// check: a caller inside a managed agent cgroup is refused everything, and
// roles come from unix groups (root is owner).
//
// Who may do what is authorizer.h's, the one authorizer of every front end.
// Results are the types of model.h, whose JSON (the REST bodies, shaped as
// docs/api.md says) is written once, in model_json.cpp; the policy test's is
// the policy library's explanation document. Errors are ControlError with a
// stable code, a message and a hint.
#pragma once

#include "common/caller.h"
#include "common/unique_fd.h"
#include "daemon/control/agent_registry.h"
#include "daemon/control/authorizer.h"
#include "daemon/control/events.h"
#include "daemon/control/model.h"
#include "daemon/store/audit.h"
#include "daemon/store/query.h"
#include "policy/config.h"

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::proxy {
class DataPlane;
class ApprovalQueue;
}  // namespace tameflare::proxy
namespace tameflare::store {
class Store;
class Vault;
}  // namespace tameflare::store
namespace tameflare::control {
class EventHub;
class KillSwitchControl;
class Metrics;
}  // namespace tameflare::control

namespace tameflare::control {

// Each error of a configuration refused (at start, or a reload) as a journal
// record with its file, JSON pointer and hint.
void log_config_errors(const policy::ConfigErrors& errors);

struct ControlServices {
    policy::ConfigStore* config = nullptr;      // required
    proxy::DataPlane* proxy = nullptr;          // required
    proxy::ApprovalQueue* approvals = nullptr;  // required
    KillSwitchControl* kill_switch = nullptr;   // required
    store::Store* store = nullptr;              // required
    store::Vault* vault = nullptr;              // required
    AgentRegistry* agents = nullptr;            // null: kernel enforcement is off
    EventHub* events = nullptr;                 // required
    Metrics* metrics = nullptr;                 // required
    // Reads and compiles the configuration files with `enforcement` applied;
    // publishes nothing (reload and set_enforcement do). Required.
    std::function<policy::LoadResult(const policy::EnforcementOverrides& enforcement)> load;
    // Walks the audit chain with the checkpoint key. Required.
    std::function<store::VerifyReport()> verify;
    // Re-encrypts the vault under a new key file; returns how many values. Required.
    std::function<std::size_t(const std::string& actor)> rotate_vault;
};

class Control {
public:
    Control(ControlServices services, RoleGroups groups);
    ~Control();
    Control(const Control&) = delete;
    Control& operator=(const Control&) = delete;

    // At start: re-applies the enforcement levels set at run time before the
    // restart (kept in the store).
    void restore();
    // SIGHUP: re-reads the configuration; false (errors logged) when refused.
    bool reload_by_signal();

    // Refuses (ControlError forbidden) unless the caller is outside every
    // agent cgroup and holds `least`. Returns the caller's role.
    Role authorize(const Caller& caller, Role least) const;

    // Status and gateways (viewer).
    DaemonStatus status(const Caller& caller) const;
    std::vector<GatewayView> gateways(const Caller& caller) const;
    GatewayView gateway(const Caller& caller, std::string_view name) const;
    // admin. `level` is monitor, soft, full, or "default" (the file's again).
    GatewayView set_enforcement(const Caller& caller, std::string_view gateway, std::string_view level);
    ReloadResult reload(const Caller& caller);
    ConfigCheck check_config(const Caller& caller) const;
    // viewer: `test` is {"gateway","method","url","headers":{..},"body":".."}
    nlohmann::json test_request(const Caller& caller, const nlohmann::json& test) const;

    // Agents: everyone sees their own, viewers see all; stopping is for the
    // agent's own user or an admin.
    std::vector<AgentInfo> agents(const Caller& caller) const;
    AgentInfo agent(const Caller& caller, std::string_view id) const;
    AgentStopping stop_agent(const Caller& caller, std::string_view id);
    // Launches an agent for a front end other than the launch socket (D-Bus):
    // tf run's request ({"gateway", "name", "isolation", "argv", "env"}) and
    // its stdin, stdout, stderr and working directory. The caller must be
    // outside every agent and named by the gateway's `launch` list (the
    // authorizer the launch socket uses too); the agent's id. Throws
    // ControlError (a launch the agents refuse: launch_refused).
    std::string launch(const Caller& caller, const nlohmann::json& request, std::vector<UniqueFd> fds);

    // Approvals: viewer lists, member answers.
    std::vector<Approval> approvals(const Caller& caller) const;
    Approval approval(const Caller& caller, std::string_view id) const;
    ApprovalAnswered answer(const Caller& caller, std::string_view id, bool approve, const std::string& note);

    // Kill switch: viewer reads, owner changes. `scope` is "all",
    // "gateway:NAME" or "connector:NAME".
    KillSwitchState kill_switch(const Caller& caller) const;
    KillSwitchState set_kill_switch(const Caller& caller, bool active, std::string_view scope,
                                    const std::string& reason);

    // Logs (viewer). Rows are passed one at a time, oldest first.
    void traffic(const Caller& caller, const store::LogFilter& filter,
                 const std::function<void(const store::TrafficRow&)>& row) const;
    void audit(const Caller& caller, const store::LogFilter& filter,
               const std::function<void(const store::AuditRecord&)>& record) const;
    store::VerifyReport verify_audit(const Caller& caller) const;

    // Vault (admin). Values are never returned.
    std::vector<store::VaultEntry> vault(const Caller& caller) const;
    SecretStored vault_set(const Caller& caller, const std::string& name, const std::string& connector,
                           std::string_view secret);
    SecretRemoved vault_remove(const Caller& caller, const std::string& name);
    VaultRotated vault_rotate(const Caller& caller);

    // Prometheus text exposition (viewer).
    std::string metrics(const Caller& caller) const;

    // Live events (the hub's), after authorize(caller, Role::none) by the
    // front end, which shows each only to whom its visible_to and owner_uid
    // say (the REST socket's event stream; D-Bus signals reach the roles
    // only, by the bus policy).
    [[nodiscard]] EventHub& events() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace tameflare::control
