// tameflared's REST answers read into tf's types: the one place tf spells a
// member's name (its counterpart in the daemon is daemon/control/model_json.cpp).
#include "cli/api_model.h"

#include <chrono>
#include <utility>

namespace tameflare::cli {

namespace {

using nlohmann::json;

// The reading helpers: each takes any JSON value, so a document of the wrong
// shape (an array, null, a string where an object belongs) reads as empty.

const json& member(const json& object, const char* key) {
    static const json kNull;
    if (!object.is_object()) return kNull;
    const auto found = object.find(key);
    return found == object.end() ? kNull : *found;
}

// The member's elements; none when it is not an array.
const json& items(const json& object, const char* key) {
    static const json kNone = json::array();
    const auto& value = member(object, key);
    return value.is_array() ? value : kNone;
}

// JSON text; bytes that are not UTF-8 replaced rather than an exception.
std::string dump(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Text as tf prints it: strings as they are, numbers and booleans written
// out (a count shown as it was sent), anything else "".
std::string as_text(const json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
    if (value.is_number()) return value.dump();
    return {};
}

std::string text(const json& object, const char* key) {
    return as_text(member(object, key));
}

// An integer; a fraction is cut off, and a number too large for one (or not
// a number at all) reads as `fallback`.
long long integer(const json& object, const char* key, long long fallback = 0) {
    const auto& value = member(object, key);
    if (!value.is_number()) return fallback;
    if (!value.is_number_float()) return value.get<long long>();
    const double real = value.get<double>();
    constexpr double kLimit = 9.2e18;  // inside long long's range, so the conversion is defined
    return real > -kLimit && real < kLimit ? static_cast<long long>(real) : fallback;
}

// A count, an id or a port: never negative, and the whole of an unsigned 64-bit value.
std::uint64_t natural(const json& object, const char* key) {
    const auto& value = member(object, key);
    if (value.is_number_unsigned()) return value.get<std::uint64_t>();
    const auto signed_value = integer(object, key);
    return signed_value < 0 ? 0 : static_cast<std::uint64_t>(signed_value);
}

bool flag(const json& object, const char* key, bool fallback = false) {
    const auto& value = member(object, key);
    return value.is_boolean() ? value.get<bool>() : fallback;
}

// A list of names: strings as they are, other elements as their JSON (shown,
// not lost); a lone string is a list of one.
std::vector<std::string> strings(const json& object, const char* key) {
    const auto& value = member(object, key);
    if (value.is_string()) return {value.get<std::string>()};
    std::vector<std::string> out;
    for (const auto& item : items(object, key)) out.push_back(item.is_string() ? item.get<std::string>() : dump(item));
    return out;
}

// Each element of the member's array read by `read`.
template <typename Read>
auto each(const json& object, const char* key, Read read) {
    std::vector<decltype(read(json()))> out;
    for (const auto& item : items(object, key)) out.push_back(read(item));
    return out;
}

std::vector<json> documents(const json& object, const char* key) {
    const auto& list = items(object, key);
    return {list.begin(), list.end()};
}

store::Clock::time_point time_or_now(const std::string& when, store::Clock::time_point now) {
    return store::parse_time(when, now).value_or(now);
}

// A summary lists its connectors by name, a detail as objects with a "name".
std::vector<std::string> connector_names(const json& gateway) {
    const auto& connectors = member(gateway, "connectors");
    if (connectors.is_string()) return {connectors.get<std::string>()};
    std::vector<std::string> out;
    for (const auto& connector : items(gateway, "connectors")) {
        out.push_back(connector.is_object() ? text(connector, "name") : as_text(connector));
    }
    return out;
}

// A detail's connector; an entry that is only a name (as in a summary) keeps just that.
ConnectorView connector_from_json(const json& connector) {
    ConnectorView out;
    if (!connector.is_object()) {
        out.name = connector.is_string() ? connector.get<std::string>() : dump(connector);
        return out;
    }
    out.name = text(connector, "name");
    out.described = true;
    out.type = text(connector, "type");
    out.domains = strings(connector, "domains");
    out.credential = text(connector, "credential");
    out.preset = text(connector, "preset");
    out.rules = each(connector, "rules", [](const json& rule) {
        return ConnectorView::Rule{text(rule, "pattern"), text(rule, "effect")};
    });
    return out;
}

DecisionView::Action decision_action_from_json(const json& action) {
    DecisionView::Action out;
    out.action = text(action, "action");
    out.risk = text(action, "risk");
    out.access = text(action, "access");
    out.route = text(action, "route");
    out.parameters = member(action, "parameters");
    out.parameters_complete = flag(action, "parameters_complete", true);
    return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Status and kill switch

KillSwitchView kill_switch_from_json(const json& document) {
    KillSwitchView out;
    out.active = flag(document, "active");
    out.all = flag(document, "all");
    out.gateways = strings(document, "gateways");
    out.connectors = strings(document, "connectors");
    out.reason = text(document, "reason");
    out.actor = text(document, "actor");
    return out;
}

StatusView status_from_json(const json& document) {
    StatusView out;
    out.version = text(document, "version");
    out.started = text(document, "started");
    out.uptime_seconds = integer(document, "uptime_seconds");
    out.enforcement = text(document, "enforcement");
    out.agents = natural(document, "agents");
    out.gateways = natural(document, "gateways");
    out.kill_switch = kill_switch_from_json(member(document, "kill_switch"));
    out.pending_approvals = natural(document, "pending_approvals");
    const auto& counters = member(document, "counters");
    out.counters.connections_open = natural(counters, "connections_open");
    out.counters.connections_total = natural(counters, "connections_total");
    out.counters.requests = natural(counters, "requests");
    out.counters.held = natural(counters, "held");
    const auto& caller = member(document, "caller");
    out.caller.uid = natural(caller, "uid");
    out.caller.role = text(caller, "role");
    return out;
}

// ---------------------------------------------------------------------------
// Gateways

GatewaySummary gateway_summary_from_json(const json& document) {
    GatewaySummary out;
    out.name = text(document, "name");
    out.description = text(document, "description");
    out.enforcement = text(document, "enforcement");
    out.connectors = connector_names(document);
    const auto& policies = member(document, "policies");
    out.policies = policies.is_array() ? policies.size() : natural(document, "policies");
    const auto& limit = member(document, "rate_limit");
    out.rate_limit.requests = integer(limit, "requests");
    out.rate_limit.window_seconds = integer(limit, "window_seconds");
    out.approval_timeout_seconds = integer(document, "approval_timeout_seconds");
    out.origin = text(document, "origin");
    return out;
}

GatewayDetail gateway_detail_from_json(const json& document) {
    GatewayDetail out;
    out.summary = gateway_summary_from_json(document);
    out.connectors = each(document, "connectors", connector_from_json);
    out.policies = each(document, "policies", [](const json& policy) {
        return PolicyView{text(policy, "name"), strings(policy, "actions"), text(policy, "effect"),
                          text(policy, "reason")};
    });
    out.tcp = each(document, "tcp", [](const json& rule) {
        return TcpView{text(rule, "host"), text(rule, "cidr"), natural(rule, "port")};
    });
    const auto& launch = member(document, "launch");
    out.launch.users = strings(launch, "users");
    out.launch.groups = strings(launch, "groups");
    return out;
}

std::vector<GatewaySummary> gateways_from_json(const json& list) {
    return each(list, "gateways", gateway_summary_from_json);
}

// ---------------------------------------------------------------------------
// Agents

AgentView agent_from_json(const json& document) {
    AgentView out;
    out.id = text(document, "id");
    out.gateway = text(document, "gateway");
    out.isolation = text(document, "isolation");
    out.pid = integer(document, "pid");
    out.uid = natural(document, "uid");
    if (member(document, "run_uid").is_number()) out.run_uid = natural(document, "run_uid");
    out.cgroup_id = natural(document, "cgroup_id");
    out.command = text(document, "command");
    out.enforced_unit = flag(document, "enforced_unit");
    return out;
}

std::vector<AgentView> agents_from_json(const json& list) {
    return each(list, "agents", agent_from_json);
}

// ---------------------------------------------------------------------------
// Approvals

ApprovalView approval_from_json(const json& document) {
    ApprovalView out;
    out.id = text(document, "id");
    out.gateway = text(document, "gateway");
    out.agent = text(document, "agent");
    out.connector = text(document, "connector");
    out.action = text(document, "action");
    out.risk = text(document, "risk");
    out.parameters = member(document, "parameters");
    out.reason = text(document, "reason");
    out.requested = text(document, "requested");
    out.age_seconds = integer(document, "age_seconds");
    out.timeout_seconds = integer(document, "timeout_seconds");
    return out;
}

std::vector<ApprovalView> approvals_from_json(const json& list) {
    return each(list, "approvals", approval_from_json);
}

std::vector<json> approval_documents(const json& list) {
    return documents(list, "approvals");
}

ApprovalResolvedView approval_resolved_from_json(const json& document) {
    ApprovalResolvedView out;
    out.id = text(document, "id");
    out.approved = flag(document, "approved");
    out.expired = flag(document, "expired");
    out.actor = text(document, "actor");
    out.note = text(document, "note");
    return out;
}

// ---------------------------------------------------------------------------
// Configuration

ConfigErrorView config_error_from_json(const json& document) {
    return {text(document, "file"), text(document, "pointer"), text(document, "message"), text(document, "hint")};
}

ReloadView reload_from_json(const json& document) {
    ReloadView out;
    out.reloaded = flag(document, "reloaded");
    out.summary = text(document, "summary");
    if (member(document, "errors").is_array()) out.errors = each(document, "errors", config_error_from_json);
    return out;
}

ConfigCheckView config_check_from_json(const json& document) {
    return {flag(document, "valid"), each(document, "errors", config_error_from_json)};
}

DecisionView decision_from_json(const json& document) {
    DecisionView out;
    out.gateway = text(document, "gateway");
    out.enforcement = text(document, "enforcement");
    out.connector = text(document, "connector");
    out.decision = text(document, "decision");
    out.verdict = text(document, "verdict");
    out.effect = text(document, "effect");
    out.reason = text(document, "reason");
    out.approval_timeout_seconds = integer(document, "approval_timeout_seconds");
    out.actions = each(document, "actions", decision_action_from_json);
    out.trace = each(document, "trace", [](const json& step) {
        return DecisionView::Step{text(step, "stage"), text(step, "detail")};
    });
    return out;
}

// ---------------------------------------------------------------------------
// The vault

SecretStoredView secret_stored_from_json(const json& document) {
    return {text(document, "name"), text(document, "connector"), text(document, "hint"), text(document, "updated")};
}

VaultRotatedView vault_rotated_from_json(const json& document) {
    return {natural(document, "rotated")};
}

std::vector<store::VaultEntry> vault_entries_from_json(const json& list) {
    const auto now = store::Clock::now();
    return each(list, "secrets", [now](const json& secret) {
        store::VaultEntry entry;
        entry.name = text(secret, "name");
        entry.connector = text(secret, "connector");
        entry.hint = text(secret, "hint");
        entry.created = time_or_now(text(secret, "created"), now);
        entry.updated = time_or_now(text(secret, "updated"), now);
        // null: never used.
        if (const auto used = text(secret, "last_used"); !used.empty()) entry.last_used = store::parse_time(used, now);
        return entry;
    });
}

// ---------------------------------------------------------------------------
// The audit chain and the logs

store::VerifyReport verify_report_from_json(const json& document) {
    store::VerifyReport out;
    out.ok = flag(document, "ok");  // a report that does not say it is fine is not
    out.records = natural(document, "records");
    out.first_seq = integer(document, "first_seq");
    out.last_seq = integer(document, "last_seq");
    out.checkpoints = natural(document, "checkpoints");
    out.unsigned_checkpoints = natural(document, "unsigned_checkpoints");
    out.after_last_checkpoint = natural(document, "after_last_checkpoint");
    out.broken_seq = integer(document, "broken_seq");
    out.problem = text(document, "problem");
    return out;
}

store::TrafficRow traffic_row_from_json(const json& row) {
    store::TrafficRow out;
    out.time = time_or_now(text(row, "time"), store::Clock::now());
    out.request_id = text(row, "request_id");
    out.gateway = text(row, "gateway");
    out.agent = text(row, "agent");
    out.connector = text(row, "connector");
    out.action = text(row, "action");
    out.method = text(row, "method");
    out.host = text(row, "host");
    out.path = text(row, "path");
    out.decision = text(row, "decision");
    out.reason = text(row, "reason");
    out.status = static_cast<unsigned>(natural(row, "status"));
    out.request_bytes = natural(row, "request_bytes");
    out.response_bytes = natural(row, "response_bytes");
    out.latency = std::chrono::microseconds(integer(row, "latency_us"));
    out.forwarded = flag(row, "forwarded");
    out.completed = flag(row, "completed", true);  // the event "traffic" is sent when a request ends
    return out;
}

store::AuditRecord audit_record_from_json(const json& record) {
    store::AuditRecord out;
    out.seq = integer(record, "seq");
    out.event.time = time_or_now(text(record, "time"), store::Clock::now());
    out.event.event = text(record, "event");
    out.event.gateway = text(record, "gateway");
    out.event.agent = text(record, "agent");
    out.event.actor = text(record, "actor");
    out.event.subject = text(record, "subject");
    // The store keeps the details as text: an object back to its JSON, text kept as it is.
    const auto& details = member(record, "details");
    out.event.details = details.is_string() ? details.get<std::string>() : details.is_null() ? "" : dump(details);
    return out;
}

std::vector<json> traffic_documents(const json& page) {
    return documents(page, "rows");
}

}  // namespace tameflare::cli
