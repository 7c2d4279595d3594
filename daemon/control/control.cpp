#include "daemon/control/control.h"

#include "common/log.h"
#include "common/users.h"
#include "daemon/control/kill_switch.h"
#include "daemon/control/metrics.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/data_plane.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "policy/explain.h"
#include "policy/params.h"

#include <grp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <mutex>

namespace tameflare::control {

using nlohmann::json;
using Kind = ControlError::Kind;

namespace {

std::optional<policy::Enforcement> parse_level(std::string_view level) {
    for (const auto candidate : {policy::Enforcement::monitor, policy::Enforcement::soft, policy::Enforcement::full}) {
        if (policy::to_string(candidate) == level) return candidate;
    }
    return std::nullopt;
}

std::string config_summary(const policy::Config& config) {
    return std::to_string(config.connectors.size()) + " connectors, " + std::to_string(config.gateways.size()) +
           " gateways";
}

}  // namespace

struct Control::Impl {
    ControlServices services;
    Authorizer authorizer;
    std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
    std::chrono::steady_clock::time_point started_steady = std::chrono::steady_clock::now();
    std::mutex changing;                     // one configuration or kill switch change at a time
    policy::EnforcementOverrides overrides;  // under `changing`

    // Loads with `next` and publishes; the errors when refused.
    policy::ConfigErrors apply(const policy::EnforcementOverrides& next, const std::string& actor,
                               const std::string& why) {
        auto result = services.load(next);
        if (!result.ok()) return std::move(result.errors);
        services.config->publish(result.config);
        services.proxy->policy_changed();
        if (services.agents != nullptr) services.agents->reload();
        const std::string text = config_summary(*result.config);
        services.store->audit(store::AuditEvent{std::chrono::system_clock::now(), "config.reloaded", "", "", actor, why,
                                                json{{"summary", text}}.dump()});
        services.events->publish(Event{0, "config.reloaded", {{"summary", text}, {"actor", actor}}});
        log(LogLevel::notice, "configuration reloaded: " + text,
            {{"MESSAGE_ID", message_id::reloaded}, {"ACTOR", actor}});
        return {};
    }

    // Kept for the next start; its audit record names who changed them.
    void save_overrides(const std::string& actor) {
        json levels = json::object();
        for (const auto& [gateway, level] : overrides) levels[gateway] = policy::to_string(level);
        services.store->set_state("enforcement_overrides", levels.dump(),
                                  store::AuditEvent{std::chrono::system_clock::now(), "gateway.updated", "", "", actor,
                                                    "enforcement_overrides", levels.dump()});
    }

    Impl(ControlServices given, RoleGroups groups)
        : services(std::move(given)), authorizer(std::move(groups), [agents = services.agents](const Caller& caller) {
              // Without kernel enforcement no cgroup is an agent's, but an unknown one still counts as one.
              return agents != nullptr ? agents->is_agent_cgroup(caller.cgroup) : caller.cgroup.empty();
          }) {}
};

Control::Control(ControlServices services, RoleGroups groups)
    : impl_(std::make_unique<Impl>(std::move(services), std::move(groups))) {}

Control::~Control() = default;

EventHub& Control::events() const {
    return *impl_->services.events;
}

void Control::restore() {
    const auto saved = impl_->services.store->state("enforcement_overrides");
    if (!saved) return;
    const auto levels = json::parse(*saved, nullptr, false);
    if (!levels.is_object()) return;
    std::lock_guard lock(impl_->changing);
    for (const auto& [gateway, level] : levels.items()) {
        if (!level.is_string()) continue;
        if (const auto parsed = parse_level(level.get<std::string>())) impl_->overrides[gateway] = *parsed;
    }
    if (impl_->overrides.empty()) return;
    const auto errors = impl_->apply(impl_->overrides, "tameflared", "enforcement levels set before the restart");
    if (!errors.empty()) {
        log(LogLevel::warning, "cannot re-apply the enforcement levels set before the restart",
            {{"HINT", "fix the configuration and reload"}});
    }
}

void log_config_errors(const policy::ConfigErrors& errors) {
    for (const auto& error : errors) {
        log(LogLevel::error, "configuration error: " + error.message,
            {{"MESSAGE_ID", message_id::config_error},
             {"CONFIG_FILE", error.file},
             {"JSON_POINTER", error.pointer},
             {"HINT", error.hint}});
    }
}

bool Control::reload_by_signal() {
    std::lock_guard lock(impl_->changing);
    const auto errors = impl_->apply(impl_->overrides, "signal:SIGHUP", "SIGHUP");
    log_config_errors(errors);
    if (!errors.empty()) log(LogLevel::warning, "reload refused; the running configuration stays in force");
    return errors.empty();
}

Role Control::authorize(const Caller& caller, Role least) const {
    return impl_->authorizer.authorize(caller, least);
}

DaemonStatus Control::status(const Caller& caller) const {
    DaemonStatus status;
    status.caller_role = authorize(caller, Role::viewer);
    status.caller_uid = caller.uid;
    status.version = TF_VERSION;
    status.started = impl_->started;
    status.uptime =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - impl_->started_steady);
    status.kernel_enforcement = impl_->services.agents != nullptr;
    status.agents = impl_->services.agents ? impl_->services.agents->list().size() : 0;
    status.gateways = impl_->services.config->snapshot()->gateways.size();
    status.kill_switch = kill_switch(caller);
    status.pending_approvals = impl_->services.approvals->size();
    status.counters = impl_->services.proxy->counters();
    return status;
}

std::vector<GatewayView> Control::gateways(const Caller& caller) const {
    authorize(caller, Role::viewer);
    const auto config = impl_->services.config->snapshot();
    std::vector<GatewayView> out;
    for (const auto& [name, gateway] : config->gateways) out.push_back(GatewayView{config, gateway.get()});
    return out;
}

GatewayView Control::gateway(const Caller& caller, std::string_view name) const {
    authorize(caller, Role::viewer);
    const auto config = impl_->services.config->snapshot();
    const auto* gateway = config->gateway(name);
    if (gateway == nullptr) {
        throw ControlError(Kind::not_found, "unknown_gateway", "no gateway \"" + std::string(name) + "\"",
                           "tf gateways lists them");
    }
    return GatewayView{config, gateway};
}

GatewayView Control::set_enforcement(const Caller& caller, std::string_view name, std::string_view level) {
    authorize(caller, Role::admin);
    const auto parsed = parse_level(level);
    if (!parsed && level != "default") {
        throw ControlError(Kind::bad_request, "bad_field", "level \"" + std::string(level) + "\" is not known",
                           "use monitor, soft, full, or default (the gateway file's level)");
    }
    std::lock_guard lock(impl_->changing);
    if (impl_->services.config->snapshot()->gateway(name) == nullptr) {
        throw ControlError(Kind::not_found, "unknown_gateway", "no gateway \"" + std::string(name) + "\"",
                           "tf gateways lists them");
    }
    auto next = impl_->overrides;
    if (parsed) {
        next[std::string(name)] = *parsed;
    } else {
        next.erase(std::string(name));
    }
    const std::string actor = caller.describe();
    const auto errors =
        impl_->apply(next, actor, "enforcement of " + std::string(name) + " set to " + std::string(level));
    if (!errors.empty()) {
        throw ControlError(
            Kind::conflict, "config_invalid",
            "the configuration on disk does not load, so the level cannot be applied: " + errors.front().message,
            "fix the files (tf policy check) and try again");
    }
    impl_->overrides = std::move(next);
    impl_->save_overrides(actor);
    const auto config = impl_->services.config->snapshot();
    const auto* gateway = config->gateway(name);
    if (gateway == nullptr) {  // gone from the files that were just re-read
        throw ControlError(Kind::not_found, "unknown_gateway", "no gateway \"" + std::string(name) + "\"", "");
    }
    const std::string applied(policy::to_string(gateway->enforcement));
    impl_->services.store->audit(store::AuditEvent{std::chrono::system_clock::now(), "gateway.updated",
                                                   std::string(name), "", actor, "enforcement",
                                                   json{{"enforcement", applied}}.dump()});
    impl_->services.events->publish(
        Event{0, "enforcement.changed", {{"gateway", std::string(name)}, {"enforcement", applied}, {"actor", actor}}});
    return GatewayView{config, gateway};
}

ReloadResult Control::reload(const Caller& caller) {
    authorize(caller, Role::admin);
    std::lock_guard lock(impl_->changing);
    auto errors = impl_->apply(impl_->overrides, caller.describe(), "reload");
    // Refused: the front end reports it as the caller's error, with every error.
    if (!errors.empty()) return ReloadResult{false, "", std::move(errors)};
    return ReloadResult{true, config_summary(*impl_->services.config->snapshot()), {}};
}

ConfigCheck Control::check_config(const Caller& caller) const {
    authorize(caller, Role::admin);
    policy::EnforcementOverrides overrides;
    {
        std::lock_guard lock(impl_->changing);
        overrides = impl_->overrides;
    }
    auto result = impl_->services.load(overrides);
    return ConfigCheck{result.ok(), std::move(result.errors)};
}

json Control::test_request(const Caller& caller, const json& test) const {
    authorize(caller, Role::viewer);
    const auto field = [&](const char* name) -> std::string {
        const auto found = test.find(name);
        if (found == test.end() || found->is_null()) return {};
        if (!found->is_string()) {
            throw ControlError(Kind::bad_request, "bad_field", std::string("field \"") + name + "\" must be a string",
                               "");
        }
        return found->get<std::string>();
    };
    if (!test.is_object()) throw ControlError(Kind::bad_request, "bad_json", "the body must be a JSON object", "");
    const std::string name = field("gateway");
    const std::string method = field("method");
    const std::string url = field("url");
    const std::string body = field("body");
    std::string content_type = field("content_type");
    if (name.empty() || method.empty() || url.empty()) {
        throw ControlError(Kind::bad_request, "bad_field", "gateway, method and url are required",
                           R"(e.g. {"gateway": "ci", "method": "GET", "url": "https://api.github.com/user"})");
    }
    const auto parsed = policy::parse_url(url);
    if (!parsed) {
        throw ControlError(Kind::bad_request, "bad_field", "url \"" + url + "\" is not an absolute URL",
                           "give scheme and host: https://api.github.com/...");
    }
    const auto config = impl_->services.config->snapshot();
    const auto* gateway = config->gateway(name);
    if (gateway == nullptr) {
        throw ControlError(Kind::not_found, "unknown_gateway", "no gateway \"" + name + "\"", "tf gateways lists them");
    }
    // Headers that change the decision: the content type, and a method
    // override the classifier weighs (as the proxy reads them).
    std::string method_override;
    if (const auto headers = test.find("headers"); headers != test.end() && !headers->is_null()) {
        if (!headers->is_object()) {
            throw ControlError(Kind::bad_request, "bad_field", "field \"headers\" must be an object of strings", "");
        }
        for (const auto& [header, value] : headers->items()) {
            if (!value.is_string()) {
                throw ControlError(Kind::bad_request, "bad_field", "header \"" + header + "\" must be a string", "");
            }
            std::string lower = header;
            std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
            if (lower == "content-type" && content_type.empty()) content_type = value.get<std::string>();
            if (lower == "x-http-method-override" || lower == "x-http-method" || lower == "x-method-override") {
                method_override = value.get<std::string>();
            }
        }
    }
    if (content_type.empty()) content_type = policy::guess_content_type(body);
    std::string upper = method;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    policy::Request request;
    request.method = upper;
    request.host = parsed->host;
    request.target = parsed->target;
    request.body = body;
    request.content_type = content_type;
    request.method_override = method_override;
    policy::EvalContext context;
    context.agent = "policy-test";
    context.all_parameters = true;
    const auto kill = impl_->services.proxy->kill_switch();
    context.kill_switch = &kill;
    return policy::to_json(*gateway, policy::evaluate(*gateway, request, context));
}

std::vector<AgentInfo> Control::agents(const Caller& caller) const {
    const Role role = authorize(caller, Role::none);
    std::vector<AgentInfo> out;
    if (impl_->services.agents != nullptr) {
        for (auto& agent : impl_->services.agents->list()) {
            if (role >= Role::viewer || agent.uid == caller.uid) out.push_back(std::move(agent));
        }
    }
    return out;
}

AgentInfo Control::agent(const Caller& caller, std::string_view id) const {
    const Role role = authorize(caller, Role::none);
    if (impl_->services.agents != nullptr) {
        for (auto& agent : impl_->services.agents->list()) {
            // Another user's agent is "not found" below viewer: its existence is not theirs to learn.
            if (agent.id == id && (role >= Role::viewer || agent.uid == caller.uid)) return agent;
        }
    }
    throw ControlError(Kind::not_found, "unknown_agent", "no agent \"" + std::string(id) + "\"",
                       "tf agents lists the running ones");
}

std::string Control::launch(const Caller& caller, const json& request, std::vector<UniqueFd> fds) {
    authorize(caller, Role::none);
    if (impl_->services.agents == nullptr) {
        throw ControlError(Kind::unavailable, "unavailable",
                           "kernel enforcement is off, so tameflared launches no agents",
                           "tf doctor tells what is missing");
    }
    const auto config = impl_->services.config->snapshot();
    // An unknown gateway is the agents' to report, with the configured ones.
    impl_->authorizer.authorize_launch(caller, config->gateway(request.value("gateway", "")));
    try {
        return impl_->services.agents->launch(caller, request, std::move(fds));
    } catch (const ControlError&) {
        throw;
    } catch (const Error& refused) {  // the agents' own checks (gateway, isolation, name, the kernel's layers)
        throw ControlError(Kind::bad_request, "launch_refused", refused.what(), refused.hint());
    }
}

AgentStopping Control::stop_agent(const Caller& caller, std::string_view id) {
    const Role role = authorize(caller, Role::none);
    const AgentInfo found = agent(caller, id);
    if (role < Role::admin && found.uid != caller.uid) {
        throw ControlError(Kind::forbidden, "forbidden", "stopping another user's agent needs the admin role",
                           "ask an owner to add you to group " + impl_->authorizer.groups().admin);
    }
    switch (impl_->services.agents->stop_agent(std::string(id))) {
        case AgentRegistry::StopResult::unknown:
            throw ControlError(Kind::not_found, "unknown_agent", "no agent \"" + std::string(id) + "\"",
                               "it may have exited; tf agents lists the running ones");
        case AgentRegistry::StopResult::enforced_unit:
            throw ControlError(Kind::conflict, "enforced_unit",
                               "\"" + std::string(id) +
                                   "\" is a cgroup under enforcement, not an agent tameflared "
                                   "launched; it is not stopped from here",
                               "stop its service, or release it: tf enforce --release --gateway " +
                                   (found.gateway.empty() ? std::string("G") : found.gateway) + " ...");
        case AgentRegistry::StopResult::stopped: break;
    }
    impl_->services.store->audit(store::AuditEvent{std::chrono::system_clock::now(), "agent.stopped", found.gateway,
                                                   std::string(id), caller.describe(), std::string(id), "{}"});
    return AgentStopping{found};
}

std::vector<Approval> Control::approvals(const Caller& caller) const {
    authorize(caller, Role::viewer);
    return impl_->services.approvals->pending();
}

Approval Control::approval(const Caller& caller, std::string_view id) const {
    authorize(caller, Role::viewer);
    for (auto& request : impl_->services.approvals->pending()) {
        if (request.id == id) return request;
    }
    throw ControlError(Kind::not_found, "unknown_approval", "no pending approval \"" + std::string(id) + "\"",
                       "it may have been answered or timed out; tf approvals lists the pending ones");
}

ApprovalAnswered Control::answer(const Caller& caller, std::string_view id, bool approve, const std::string& note) {
    authorize(caller, Role::member);
    if (note.size() > 4096) {
        throw ControlError(Kind::bad_request, "bad_field", "note is longer than 4096 bytes", "shorten it");
    }
    proxy::ApprovalAnswer given{approve, note, caller.describe()};
    if (!impl_->services.approvals->answer(id, given)) {
        // Answered by someone else, timed out or never there: tell which, from the store.
        std::string state;
        try {
            auto db = impl_->services.store->reader();
            auto query = db.prepare("SELECT state FROM approvals WHERE id = ?");
            query.bind(1, std::string(id));
            if (query.step()) state = query.text(0);
        } catch (const std::exception&) {
        }
        if (!state.empty() && state != "pending") {
            throw ControlError(Kind::conflict, "conflict",
                               "approval \"" + std::string(id) + "\" is no longer pending (" + state + ")",
                               "tf approvals lists the pending ones");
        }
        throw ControlError(Kind::not_found, "unknown_approval", "no pending approval \"" + std::string(id) + "\"",
                           "tf approvals lists the pending ones");
    }
    impl_->services.metrics->approval_answered(approve);
    log(LogLevel::notice, "approval " + std::string(id) + (approve ? " approved" : " denied") + " by " + given.actor,
        {{"MESSAGE_ID", message_id::approval},
         {"APPROVAL_ID", id},
         {"DECISION", approve ? "allow" : "deny"},
         {"ACTOR", given.actor},
         {"NOTE", note}});
    return ApprovalAnswered{std::string(id), approve, note, caller.describe()};
}

KillSwitchState Control::kill_switch(const Caller& caller) const {
    authorize(caller, Role::viewer);
    KillSwitchState out{impl_->services.proxy->kill_switch(), "", ""};
    if (const auto saved = impl_->services.store->state("kill_switch")) {
        const auto value = json::parse(*saved, nullptr, false);
        if (value.is_object()) {
            out.reason = value.value("reason", std::string());
            out.actor = value.value("actor", std::string());
        }
    }
    return out;
}

KillSwitchState Control::set_kill_switch(const Caller& caller, bool active, std::string_view scope,
                                         const std::string& reason) {
    authorize(caller, Role::owner);
    if (reason.size() > 4096) {
        throw ControlError(Kind::bad_request, "bad_field", "reason is longer than 4096 bytes", "shorten it");
    }
    std::string kind(scope);
    std::string name;
    if (const auto colon = scope.find(':'); colon != std::string_view::npos) {
        kind = std::string(scope.substr(0, colon));
        name = std::string(scope.substr(colon + 1));
    }
    if (!((kind == "all" && name.empty()) || ((kind == "gateway" || kind == "connector") && !name.empty()))) {
        throw ControlError(Kind::bad_request, "bad_field", "scope \"" + std::string(scope) + "\" is not known",
                           "use all, gateway:NAME or connector:NAME");
    }
    std::lock_guard lock(impl_->changing);
    auto next = impl_->services.proxy->kill_switch();
    if (kind == "all") {
        // Off for "all" lifts every scope: the big red button has one off position.
        if (active) {
            next.all = true;
        } else {
            next = policy::KillSwitch{};
        }
    } else {
        auto& names = kind == "gateway" ? next.gateways : next.connectors;
        if (active) {
            names.insert(name);
        } else {
            names.erase(name);
        }
    }
    const std::string actor = caller.describe();
    impl_->services.kill_switch->set(next, reason, actor);
    KillSwitchState out{next, reason, actor};
    impl_->services.events->publish(Event{0, "kill_switch.changed", to_json(out)});
    log(active ? LogLevel::warning : LogLevel::notice,
        std::string("kill switch ") + (active ? "on" : "off") + " for " + std::string(scope) + " by " + actor,
        {{"MESSAGE_ID", message_id::kill_switch},
         {"KILL_SWITCH", active ? "on" : "off"},
         {"SCOPE", scope},
         {"REASON", reason},
         {"ACTOR", actor}});
    return out;
}

void Control::traffic(const Caller& caller, const store::LogFilter& filter,
                      const std::function<void(const store::TrafficRow&)>& row) const {
    authorize(caller, Role::viewer);
    auto db = impl_->services.store->reader();
    store::query_traffic(db, filter, row);
}

void Control::audit(const Caller& caller, const store::LogFilter& filter,
                    const std::function<void(const store::AuditRecord&)>& record) const {
    authorize(caller, Role::viewer);
    auto db = impl_->services.store->reader();
    store::query_audit(db, filter, record);
}

store::VerifyReport Control::verify_audit(const Caller& caller) const {
    authorize(caller, Role::viewer);
    return impl_->services.verify();
}

std::vector<store::VaultEntry> Control::vault(const Caller& caller) const {
    authorize(caller, Role::admin);
    auto db = impl_->services.store->reader();
    return store::list_vault(db);
}

SecretStored Control::vault_set(const Caller& caller, const std::string& name, const std::string& connector,
                                std::string_view secret) {
    authorize(caller, Role::admin);
    if (!store::Vault::valid_name(name)) {
        throw ControlError(Kind::bad_request, "bad_field", "\"" + name + "\" is not a valid secret name",
                           "use letters, digits, '.', '_' and '-', up to 128 characters");
    }
    if (secret.empty()) throw ControlError(Kind::bad_request, "bad_field", "the value is empty", "give the secret");
    impl_->services.vault->set(name, connector, secret, caller.describe());
    auto db = impl_->services.store->reader();
    for (const auto& entry : store::list_vault(db)) {
        if (entry.name == name) return SecretStored{entry.name, entry.connector, entry.hint, entry.updated};
    }
    return SecretStored{name, connector, "", std::nullopt};
}

SecretRemoved Control::vault_remove(const Caller& caller, const std::string& name) {
    authorize(caller, Role::admin);
    if (!impl_->services.vault->remove(name, caller.describe())) {
        throw ControlError(Kind::not_found, "unknown_secret", "no secret \"" + name + "\" in the vault",
                           "tf vault list shows the names");
    }
    return SecretRemoved{name};
}

VaultRotated Control::vault_rotate(const Caller& caller) {
    authorize(caller, Role::admin);
    try {
        return VaultRotated{impl_->services.rotate_vault(caller.describe())};
    } catch (const ControlError&) {
        throw;
    } catch (const std::exception& error) {
        throw ControlError(Kind::conflict, "rotate_refused", error.what(),
                           "a key given by systemd credentials is rotated by replacing the credential");
    }
}

std::string Control::metrics(const Caller& caller) const {
    authorize(caller, Role::viewer);
    Gauges gauges;
    const auto counters = impl_->services.proxy->counters();
    const auto kill = impl_->services.proxy->kill_switch();
    gauges.active_connections = counters.connections_open;
    gauges.approvals_pending = impl_->services.approvals->size();
    gauges.kill_switch_all = kill.all;
    gauges.kill_switch_gateways = kill.gateways.size();
    gauges.kill_switch_connectors = kill.connectors.size();
    gauges.agents = impl_->services.agents ? impl_->services.agents->list().size() : 0;
    return impl_->services.metrics->render(gauges);
}

}  // namespace tameflare::control
