// The control plane's types as JSON: the one place their REST spelling is
// written, and read back for what reads the events' data.
#include "daemon/control/model.h"

#include "daemon/store/query.h"

#include <set>

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

json summary_json(const policy::Gateway& gateway) {
    json connectors = json::array();
    for (const auto& connector : gateway.connectors) connectors.push_back(connector.name);
    return {{"name", gateway.name},
            {"description", gateway.description},
            {"enforcement", policy::to_string(gateway.enforcement)},
            {"connectors", connectors},
            {"policies", gateway.policies.size()},
            {"rate_limit",
             {{"requests", gateway.rate_limit.requests}, {"window_seconds", gateway.rate_limit.window.count()}}},
            {"approval_timeout_seconds", gateway.approval_timeout.count()},
            {"origin", gateway.origin}};
}

json to_json(const GatewayView& view) {
    const policy::Gateway& gateway = *view;
    json out = summary_json(gateway);
    json connectors = json::array();
    for (const auto& connector : gateway.connectors) {
        json rules = json::array();
        for (const auto& rule : connector.rules) {
            rules.push_back({{"pattern", rule.pattern}, {"effect", policy::to_string(rule.effect)}});
        }
        connectors.push_back({{"name", connector.name},
                              {"type", connector.def ? connector.def->name : ""},
                              {"domains", connector.domains},
                              {"credential", connector.credential},
                              {"preset", policy::to_string(connector.preset)},
                              {"rules", rules}});
    }
    json policies = json::array();
    for (const auto& policy : gateway.policies) {
        policies.push_back({{"name", policy.name},
                            {"actions", policy.actions},
                            {"effect", policy::to_string(policy.effect)},
                            {"reason", policy.reason}});
    }
    json tcp = json::array();
    for (const auto& rule : gateway.tcp) {
        json entry{{"port", rule.port}};
        if (rule.host.empty()) {
            entry["cidr"] = rule.cidr;
        } else {
            entry["host"] = rule.host;
        }
        tcp.push_back(entry);
    }
    out["connectors"] = connectors;
    out["policies"] = policies;
    out["tcp"] = tcp;
    out["launch"] = {{"users", gateway.launch_users}, {"groups", gateway.launch_groups}};
    return out;
}

json to_json(const std::vector<GatewayView>& gateways) {
    json out = json::array();
    for (const auto& gateway : gateways) out.push_back(summary_json(*gateway));
    return {{"gateways", out}};
}

json to_json(const policy::ConfigErrors& errors) {
    json out = json::array();
    for (const auto& error : errors) {
        out.push_back(
            {{"file", error.file}, {"pointer", error.pointer}, {"message", error.message}, {"hint", error.hint}});
    }
    return out;
}

json to_json(const ReloadResult& result) {
    if (!result.reloaded) return {{"reloaded", false}, {"errors", to_json(result.errors)}};
    return {{"reloaded", true}, {"summary", result.summary}};
}

json to_json(const ConfigCheck& check) {
    return {{"valid", check.valid}, {"errors", to_json(check.errors)}};
}

json to_json(const AgentStopping& stopping) {
    json out = to_json(stopping.agent);
    out["stopping"] = true;
    return out;
}

json to_json(const store::VerifyReport& report) {
    return {{"ok", report.ok},
            {"records", report.records},
            {"first_seq", report.first_seq},
            {"last_seq", report.last_seq},
            {"checkpoints", report.checkpoints},
            {"unsigned_checkpoints", report.unsigned_checkpoints},
            {"after_last_checkpoint", report.after_last_checkpoint},
            {"broken_seq", report.broken_seq},
            {"problem", report.problem}};
}

json to_json(const std::vector<store::VaultEntry>& secrets) {
    json out = json::array();
    for (const auto& entry : secrets) {
        json item{{"name", entry.name},
                  {"connector", entry.connector},
                  {"hint", entry.hint},
                  {"created", store::format_time(entry.created)},
                  {"updated", store::format_time(entry.updated)},
                  {"last_used", nullptr}};
        if (entry.last_used) item["last_used"] = store::format_time(*entry.last_used);
        out.push_back(item);
    }
    return {{"secrets", out}};
}

json to_json(const SecretStored& stored) {
    if (!stored.updated) return {{"name", stored.name}, {"connector", stored.connector}};
    return {{"name", stored.name},
            {"connector", stored.connector},
            {"hint", stored.hint},
            {"updated", store::format_time(*stored.updated)}};
}

json to_json(const SecretRemoved& removed) {
    return {{"removed", true}, {"name", removed.name}};
}

json to_json(const VaultRotated& rotated) {
    return {{"rotated", rotated.rotated}};
}

// ---------------------------------------------------------------------------
// Reading them back

namespace {

template <typename Number>
Number number_of(const json& data, const char* key) {
    const auto found = data.find(key);
    return found != data.end() && found->is_number() ? found->get<Number>() : Number{};
}

std::set<std::string> names_of(const json& data, const char* key) {
    std::set<std::string> out;
    const auto found = data.find(key);
    if (found == data.end() || !found->is_array()) return out;
    for (const auto& name : *found) {
        if (name.is_string()) out.insert(name.get<std::string>());
    }
    return out;
}

}  // namespace

std::string text_member(const json& data, const char* key) {
    if (!data.is_object()) return {};
    const auto found = data.find(key);
    return found != data.end() && found->is_string() ? found->get<std::string>() : std::string();
}

bool flag_member(const json& data, const char* key) {
    if (!data.is_object()) return false;
    const auto found = data.find(key);
    return found != data.end() && found->is_boolean() && found->get<bool>();
}

std::int64_t integer_member(const json& data, const char* key) {
    if (!data.is_object()) return 0;
    const auto found = data.find(key);
    return found != data.end() && found->is_number_integer() ? found->get<std::int64_t>() : 0;
}

KillSwitchState kill_switch_from_json(const json& data) {
    KillSwitchState out;
    if (!data.is_object()) return out;
    out.scope.all = flag_member(data, "all");
    for (const auto& name : names_of(data, "gateways")) out.scope.gateways.insert(name);
    for (const auto& name : names_of(data, "connectors")) out.scope.connectors.insert(name);
    out.reason = text_member(data, "reason");
    out.actor = text_member(data, "actor");
    return out;
}

AgentInfo agent_from_json(const json& data) {
    AgentInfo out;
    if (!data.is_object()) return out;
    out.id = text_member(data, "id");
    out.gateway = text_member(data, "gateway");
    out.isolation = text_member(data, "isolation");
    out.pid = number_of<int>(data, "pid");
    out.uid = number_of<unsigned>(data, "uid");
    out.run_uid = number_of<unsigned>(data, "run_uid");
    out.cgroup_id = number_of<std::uint64_t>(data, "cgroup_id");
    out.command = text_member(data, "command");
    out.enforced_unit = flag_member(data, "enforced_unit");
    return out;
}

Approval approval_from_json(const json& data) {
    Approval out;
    if (!data.is_object()) return out;
    out.id = text_member(data, "id");
    out.gateway = text_member(data, "gateway");
    out.agent = text_member(data, "agent");
    out.connector = text_member(data, "connector");
    out.action = text_member(data, "action");
    out.risk = text_member(data, "risk");
    const auto parameters = data.find("parameters");
    if (parameters != data.end() && !parameters->is_null()) {
        out.parameters = parameters->is_string() ? parameters->get<std::string>()
                                                 : parameters->dump(-1, ' ', false, json::error_handler_t::replace);
    }
    out.reason = text_member(data, "reason");
    const auto now = std::chrono::system_clock::now();
    out.requested_at = store::parse_time(text_member(data, "requested"), now).value_or(now);
    out.timeout = std::chrono::seconds(number_of<long long>(data, "timeout_seconds"));
    return out;
}

}  // namespace tameflare::control
