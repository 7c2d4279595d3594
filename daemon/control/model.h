// The control plane's results as types: what Control returns for the daemon's
// status, the kill switch, agents and approvals. Their JSON (the REST bodies
// of docs/api.md, the live events' data, D-Bus's JSON answers) is written in
// one place, model_json.cpp; D-Bus marshals the rest from the fields
// (dbus/bus_methods.cpp), so no front end reads a field back by its name.
#pragma once

#include "daemon/control/agent_registry.h"
#include "daemon/control/authorizer.h"
#include "daemon/proxy/interfaces.h"
#include "daemon/proxy/server.h"
#include "daemon/store/audit.h"
#include "daemon/store/vault_store.h"
#include "policy/config.h"
#include "policy/engine.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::control {

struct KillSwitchState {
    policy::KillSwitch scope;
    std::string reason;  // as given when it was last changed
    std::string actor;   // who changed it last
    [[nodiscard]] bool active() const;
    // "all", "gateway:NAME", "connector:NAME": the scopes in force.
    [[nodiscard]] std::vector<std::string> scopes() const;
};

struct DaemonStatus {
    std::string version;
    std::chrono::system_clock::time_point started;
    std::chrono::seconds uptime{0};
    bool kernel_enforcement = false;  // false: the explicit proxy only
    std::size_t agents = 0;
    std::size_t gateways = 0;
    KillSwitchState kill_switch;
    std::size_t pending_approvals = 0;
    proxy::ProxyCounters counters;
    unsigned caller_uid = 0;
    Role caller_role = Role::none;
};

// A held request as the control plane shows it.
using Approval = proxy::ApprovalRequest;

struct ApprovalAnswered {
    std::string id;
    bool approved = false;
    std::string note;
    std::string actor;
};

// A gateway of the configuration in force, kept alive with it.
struct GatewayView {
    std::shared_ptr<const policy::Config> config;
    const policy::Gateway* gateway = nullptr;
    const policy::Gateway& operator*() const { return *gateway; }
    const policy::Gateway* operator->() const { return gateway; }
};

struct ReloadResult {
    bool reloaded = false;
    std::string summary;          // when reloaded: "N connectors, M gateways"
    policy::ConfigErrors errors;  // when refused
};

struct ConfigCheck {
    bool valid = false;
    policy::ConfigErrors errors;
};

struct AgentStopping {
    AgentInfo agent;
};

struct SecretStored {
    std::string name;
    std::string connector;
    std::string hint;
    std::optional<std::chrono::system_clock::time_point> updated;  // none: not listed back
};

struct SecretRemoved {
    std::string name;
};

struct VaultRotated {
    std::size_t rotated = 0;
};

// The JSON of each, as docs/api.md gives it.
nlohmann::json to_json(const KillSwitchState& kill_switch);
nlohmann::json to_json(const DaemonStatus& status);
nlohmann::json to_json(const AgentInfo& agent);
nlohmann::json to_json(const Approval& approval);  // its age is taken now
nlohmann::json to_json(const ApprovalAnswered& answered);
nlohmann::json to_json(const std::vector<AgentInfo>& agents);    // {"agents": [...]}
nlohmann::json to_json(const std::vector<Approval>& approvals);  // {"approvals": [...]}
// A gateway's summary (GET /v1/gateways, a level set) and its detail (GET /v1/gateways/NAME).
nlohmann::json summary_json(const policy::Gateway& gateway);
nlohmann::json to_json(const GatewayView& gateway);                // the detail
nlohmann::json to_json(const std::vector<GatewayView>& gateways);  // {"gateways": [summaries]}
nlohmann::json to_json(const policy::ConfigErrors& errors);
nlohmann::json to_json(const ReloadResult& result);
nlohmann::json to_json(const ConfigCheck& check);
nlohmann::json to_json(const AgentStopping& stopping);
nlohmann::json to_json(const store::VerifyReport& report);
nlohmann::json to_json(const std::vector<store::VaultEntry>& secrets);  // {"secrets": [...]}, never a value
nlohmann::json to_json(const SecretStored& stored);
nlohmann::json to_json(const SecretRemoved& removed);
nlohmann::json to_json(const VaultRotated& rotated);
// Whole seconds since it was held.
std::uint64_t age_seconds(const Approval& approval);

// The inverses, for what reads the events' data (the D-Bus front end): a
// missing or mistyped member leaves the field empty, never throws.
KillSwitchState kill_switch_from_json(const nlohmann::json& data);
// One member of an event's data: "", false or 0 when it is missing or of another type.
std::string text_member(const nlohmann::json& data, const char* key);
bool flag_member(const nlohmann::json& data, const char* key);
std::int64_t integer_member(const nlohmann::json& data, const char* key);
AgentInfo agent_from_json(const nlohmann::json& data);
Approval approval_from_json(const nlohmann::json& data);

}  // namespace tameflare::control
