// The control plane's types as JSON: the one place their REST spelling is written.
#include "daemon/control/model.h"

#include "daemon/store/query.h"

namespace tameflare::control {

using nlohmann::json;

bool KillSwitchState::active() const {
    return scope.all || !scope.gateways.empty() || !scope.connectors.empty();
}

std::vector<std::string> KillSwitchState::scopes() const {
    std::vector<std::string> out;
    if (scope.all) out.emplace_back("all");
    for (const auto& name : scope.gateways) out.push_back("gateway:" + name);
    for (const auto& name : scope.connectors) out.push_back("connector:" + name);
    return out;
}

json to_json(const KillSwitchState& kill_switch) {
    return {{"active", kill_switch.active()},         {"all", kill_switch.scope.all},
            {"gateways", kill_switch.scope.gateways}, {"connectors", kill_switch.scope.connectors},
            {"reason", kill_switch.reason},           {"actor", kill_switch.actor}};
}

json to_json(const DaemonStatus& status) {
    return {{"version", status.version},
            {"started", store::format_time(status.started)},
            {"uptime_seconds", status.uptime.count()},
            {"enforcement", status.kernel_enforcement ? "kernel" : "explicit"},
            {"agents", status.agents},
            {"gateways", status.gateways},
            {"kill_switch", to_json(status.kill_switch)},
            {"pending_approvals", status.pending_approvals},
            {"counters",
             {{"connections_open", status.counters.connections_open},
              {"connections_total", status.counters.connections_total},
              {"requests", status.counters.requests},
              {"held", status.counters.held}}},
            {"caller", {{"uid", status.caller_uid}, {"role", to_string(status.caller_role)}}}};
}

json to_json(const AgentInfo& agent) {
    return {{"id", agent.id},
            {"gateway", agent.gateway},
            {"isolation", agent.isolation},
            {"pid", agent.pid},
            {"uid", agent.uid},
            {"run_uid", agent.run_uid},
            {"cgroup_id", agent.cgroup_id},
            {"command", agent.command},
            {"enforced_unit", agent.enforced_unit}};
}

std::uint64_t age_seconds(const Approval& approval) {
    const auto age =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - approval.requested_at);
    return age.count() < 0 ? 0 : static_cast<std::uint64_t>(age.count());
}

json to_json(const Approval& approval) {
    json parameters = json::object();
    if (!approval.parameters.empty()) {
        parameters = json::parse(approval.parameters, nullptr, false);
        if (parameters.is_discarded()) parameters = approval.parameters;
    }
    return {{"id", approval.id},
            {"gateway", approval.gateway},
            {"agent", approval.agent},
            {"connector", approval.connector},
            {"action", approval.action},
            {"risk", approval.risk},
            {"parameters", parameters},
            {"reason", approval.reason},
            {"requested", store::format_time(approval.requested_at)},
            {"age_seconds", age_seconds(approval)},
            {"timeout_seconds", approval.timeout.count()}};
}

json to_json(const ApprovalAnswered& answered) {
    return {{"id", answered.id}, {"approved", answered.approved}, {"note", answered.note}, {"actor", answered.actor}};
}

json to_json(const std::vector<AgentInfo>& agents) {
    json out = json::array();
    for (const auto& agent : agents) out.push_back(to_json(agent));
    return {{"agents", out}};
}

json to_json(const std::vector<Approval>& approvals) {
    json out = json::array();
    for (const auto& approval : approvals) out.push_back(to_json(approval));
    return {{"approvals", out}};
}

}  // namespace tameflare::control
