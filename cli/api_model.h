// tameflared's REST answers (docs/api.md) as tf reads them: one type per
// document, each read here, once, field by field, so the commands print from
// fields and no command spells a member's name. The daemon writes the same
// documents in one place too (daemon/control/model_json.cpp; the logs are the
// store's JSON Lines objects, the policy test the policy library's
// explanation), and tests/cli/api_model_test.cpp reads back what those
// writers write: the round trip is what keeps the two spellings the same.
//
// Reading is tolerant, as a client of a daemon of another version has to be:
// a member that is missing or of another type reads as empty, zero or false,
// and nothing here throws. A number or boolean where text is expected reads
// as its JSON text; a number with a fraction where an integer is expected
// reads as its integer part; a list of names that is a lone string is a list
// of one. The views compare by value, so a test can hold one against another.
#pragma once

#include "daemon/store/audit.h"
#include "daemon/store/query.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::cli {

// ---------------------------------------------------------------------------
// Status and kill switch

// GET and PUT /v1/kill-switch, and the status's "kill_switch".
struct KillSwitchView {
    bool active = false;
    bool all = false;  // every request, whatever its gateway or connector
    std::vector<std::string> gateways;
    std::vector<std::string> connectors;
    std::string reason;
    std::string actor;
    bool operator==(const KillSwitchView&) const = default;
};

// GET /v1/status.
struct StatusView {
    struct Counters {
        std::uint64_t connections_open = 0;
        std::uint64_t connections_total = 0;
        std::uint64_t requests = 0;
        std::uint64_t held = 0;
        bool operator==(const Counters&) const = default;
    };
    struct Caller {
        std::uint64_t uid = 0;
        std::string role;
        bool operator==(const Caller&) const = default;
    };
    std::string version;
    std::string started;  // RFC 3339, as sent
    long long uptime_seconds = 0;
    std::string enforcement;  // "kernel" or "explicit"
    std::uint64_t agents = 0;
    std::uint64_t gateways = 0;
    KillSwitchView kill_switch;
    std::uint64_t pending_approvals = 0;
    Counters counters;
    Caller caller;
    bool operator==(const StatusView&) const = default;
};

// ---------------------------------------------------------------------------
// Gateways

struct RateLimitView {
    long long requests = 0;  // 0: no limit
    long long window_seconds = 0;
    bool operator==(const RateLimitView&) const = default;
};

// An entry of GET /v1/gateways, and the answer to PUT .../enforcement.
struct GatewaySummary {
    std::string name;
    std::string description;
    std::string enforcement;  // monitor, soft or full
    // The connectors' names: a summary lists names, a detail objects (their "name" is taken).
    std::vector<std::string> connectors;
    // How many policies: a summary gives the count, a detail the policies (their count is taken).
    std::uint64_t policies = 0;
    RateLimitView rate_limit;
    long long approval_timeout_seconds = 0;
    std::string origin;  // the file it was read from
    bool operator==(const GatewaySummary&) const = default;
};

struct ConnectorView {
    struct Rule {
        std::string pattern;
        std::string effect;  // allow, require_approval or deny
        bool operator==(const Rule&) const = default;
    };
    std::string name;
    // false: the answer gave a name and nothing else (a summary's entry);
    // the fields below are then empty.
    bool described = false;
    std::string type;  // the connector definition's name
    std::vector<std::string> domains;
    std::string credential;
    std::string preset;
    std::vector<Rule> rules;
    bool operator==(const ConnectorView&) const = default;
};

struct PolicyView {
    std::string name;
    std::vector<std::string> actions;
    std::string effect;
    std::string reason;
    bool operator==(const PolicyView&) const = default;
};

struct TcpView {
    std::string host;  // a name, or "" when the rule gives a range
    std::string cidr;
    std::uint64_t port = 0;
    bool operator==(const TcpView&) const = default;
};

// GET /v1/gateways/NAME.
struct GatewayDetail {
    struct Launch {
        std::vector<std::string> users;
        std::vector<std::string> groups;
        bool operator==(const Launch&) const = default;
    };
    GatewaySummary summary;  // its connectors' names and its count of policies too
    std::vector<ConnectorView> connectors;
    std::vector<PolicyView> policies;
    std::vector<TcpView> tcp;
    Launch launch;
    bool operator==(const GatewayDetail&) const = default;
};

// ---------------------------------------------------------------------------
// Agents

// GET /v1/agents/ID, an entry of GET /v1/agents, POST .../stop.
struct AgentView {
    std::string id;
    std::string gateway;
    std::string isolation;
    long long pid = 0;
    std::uint64_t uid = 0;                 // who launched it
    std::optional<std::uint64_t> run_uid;  // the uid it runs as; absent from some answers
    std::uint64_t cgroup_id = 0;
    std::string command;
    bool enforced_unit = false;  // an existing cgroup under enforcement (tf enforce), not launched
    bool operator==(const AgentView&) const = default;
};

// ---------------------------------------------------------------------------
// Approvals

// GET /v1/approvals/ID, an entry of GET /v1/approvals, and the data of the
// event approval.requested.
struct ApprovalView {
    std::string id;
    std::string gateway;
    std::string agent;
    std::string connector;
    std::string action;
    std::string risk;
    // The action's parameters as sent: an object, or the text the proxy kept
    // when it was not JSON; null when absent. Printed as the agent wrote them.
    nlohmann::json parameters;
    std::string reason;     // why it is held
    std::string requested;  // RFC 3339, as sent
    long long age_seconds = 0;
    long long timeout_seconds = 0;
    bool operator==(const ApprovalView&) const = default;
};

// The data of the event approval.resolved, and the answer to POST
// /v1/approvals/ID/approve or /deny.
struct ApprovalResolvedView {
    std::string id;
    bool approved = false;
    bool expired = false;  // it timed out or was withdrawn: refused without an answer
    std::string actor;
    std::string note;
    bool operator==(const ApprovalResolvedView&) const = default;
};

// ---------------------------------------------------------------------------
// Configuration

struct ConfigErrorView {
    std::string file;
    std::string pointer;  // RFC 6901; "" for the whole file
    std::string message;
    std::string hint;
    bool operator==(const ConfigErrorView&) const = default;
};

// POST /v1/reload: its answer, or its refusal (an error document with the errors).
struct ReloadView {
    bool reloaded = false;
    std::string summary;  // when reloaded
    // When refused; nullopt when the answer holds no list of errors at all.
    std::optional<std::vector<ConfigErrorView>> errors;
    bool operator==(const ReloadView&) const = default;
};

// POST /v1/config/check.
struct ConfigCheckView {
    bool valid = false;
    std::vector<ConfigErrorView> errors;
    bool operator==(const ConfigCheckView&) const = default;
};

// POST /v1/policy/test, and tf policy test's own evaluation (policy/explain.h).
struct DecisionView {
    struct Action {
        std::string action;
        std::string risk;
        std::string access;
        std::string route;
        nlohmann::json parameters;  // as sent; null when absent
        bool parameters_complete = true;
        bool operator==(const Action&) const = default;
    };
    struct Step {
        std::string stage;
        std::string detail;
        bool operator==(const Step&) const = default;
    };
    std::string gateway;
    std::string enforcement;
    std::string connector;  // "" when none serves the host
    std::string decision;
    std::string verdict;  // forward, hold or refuse
    std::string effect;
    std::string reason;
    long long approval_timeout_seconds = 0;  // given when the verdict is hold
    std::vector<Action> actions;
    std::vector<Step> trace;
    bool operator==(const DecisionView&) const = default;
};

// ---------------------------------------------------------------------------
// The vault

// PUT /v1/vault/NAME.
struct SecretStoredView {
    std::string name;
    std::string connector;
    std::string hint;
    std::string updated;  // RFC 3339, as sent
    bool operator==(const SecretStoredView&) const = default;
};

// POST /v1/vault/rotate.
struct VaultRotatedView {
    std::uint64_t rotated = 0;
    bool operator==(const VaultRotatedView&) const = default;
};

// ---------------------------------------------------------------------------
// Reading them

KillSwitchView kill_switch_from_json(const nlohmann::json& document);
StatusView status_from_json(const nlohmann::json& document);
GatewaySummary gateway_summary_from_json(const nlohmann::json& document);
GatewayDetail gateway_detail_from_json(const nlohmann::json& document);
std::vector<GatewaySummary> gateways_from_json(const nlohmann::json& list);  // {"gateways": [...]}
AgentView agent_from_json(const nlohmann::json& document);
std::vector<AgentView> agents_from_json(const nlohmann::json& list);  // {"agents": [...]}
ApprovalView approval_from_json(const nlohmann::json& document);
std::vector<ApprovalView> approvals_from_json(const nlohmann::json& list);  // {"approvals": [...]}
// The entries of {"approvals": [...]} as sent, for output that passes them on
// unchanged (tf approvals watch's JSON Lines).
std::vector<nlohmann::json> approval_documents(const nlohmann::json& list);
ApprovalResolvedView approval_resolved_from_json(const nlohmann::json& document);
ConfigErrorView config_error_from_json(const nlohmann::json& document);
ReloadView reload_from_json(const nlohmann::json& document);
ConfigCheckView config_check_from_json(const nlohmann::json& document);
DecisionView decision_from_json(const nlohmann::json& document);
SecretStoredView secret_stored_from_json(const nlohmann::json& document);
VaultRotatedView vault_rotated_from_json(const nlohmann::json& document);

// The documents that are the store's own types, read back into them for the
// store's writers and reports. Times that do not parse read as now.
std::vector<store::VaultEntry> vault_entries_from_json(const nlohmann::json& list);  // {"secrets": [...]}
store::VerifyReport verify_report_from_json(const nlohmann::json& document);         // GET /v1/audit/verify
// A traffic row (GET /v1/traffic, the event "traffic") and an audit record
// (GET /v1/audit): the store's JSON Lines objects.
store::TrafficRow traffic_row_from_json(const nlohmann::json& row);
store::AuditRecord audit_record_from_json(const nlohmann::json& record);
// The rows of GET /v1/traffic?format=json ({"rows": [...]}) as sent, for
// output that passes them on unchanged (tf logs --format jsonl).
std::vector<nlohmann::json> traffic_documents(const nlohmann::json& page);

}  // namespace tameflare::cli
