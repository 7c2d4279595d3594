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
#include "policy/engine.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
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

// The JSON of each, as docs/api.md gives it.
nlohmann::json to_json(const KillSwitchState& kill_switch);
nlohmann::json to_json(const DaemonStatus& status);
nlohmann::json to_json(const AgentInfo& agent);
nlohmann::json to_json(const Approval& approval);  // its age is taken now
nlohmann::json to_json(const ApprovalAnswered& answered);
nlohmann::json to_json(const std::vector<AgentInfo>& agents);    // {"agents": [...]}
nlohmann::json to_json(const std::vector<Approval>& approvals);  // {"approvals": [...]}
// Whole seconds since it was held.
std::uint64_t age_seconds(const Approval& approval);

}  // namespace tameflare::control
