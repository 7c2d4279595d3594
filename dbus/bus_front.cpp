// The D-Bus front end's logic (bus_front.h): methods, properties, errors and
// what events become, with no sd-bus call.
#include "dbus/bus_front.h"

#include "common/text.h"
#include "daemon/control/control.h"
#include "daemon/proxy/approvals.h"
#include "daemon/store/query.h"
#include "policy/config.h"

#include <fcntl.h>
#include <systemd/sd-bus.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <sstream>

namespace tameflare::dbus {

namespace {

using control::ControlError;
using control::Role;
using nlohmann::json;
using Kind = ControlError::Kind;

// A log query's answer is one D-Bus string; the bus refuses messages far
// smaller than a whole traffic log, so past this the caller narrows it.
constexpr std::size_t kMaxLogReply = std::size_t{16} << 20;

std::string dump(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The parameters of a held request as JSON text, the way REST shows them.
std::string parameters_text(const control::Approval& approval) {
    return dump(control::to_json(approval).value("parameters", json::object()));
}

// A sub-object's path (sd_bus_path_encode: a pure function of libsystemd,
// no bus involved).
std::string path_of(const char* prefix, const std::string& label) {
    char* raw = nullptr;
    if (sd_bus_path_encode(prefix, label.c_str(), &raw) < 0) throw std::bad_alloc();
    const std::unique_ptr<char, decltype(&std::free)> path(raw, &std::free);
    return path.get();
}

AgentRow row_of(const control::AgentInfo& agent) {
    return {agent.id, agent.gateway, static_cast<std::uint32_t>(agent.uid), static_cast<std::uint32_t>(agent.pid),
            agent.isolation};
}

ApprovalRow row_of(const control::Approval& approval) {
    return {approval.id,
            approval.gateway,
            approval.agent,
            approval.action,
            approval.risk,
            parameters_text(approval),
            control::age_seconds(approval)};
}

store::LogFilter log_filter(const StringPairs& filters, bool audit) {
    try {
        return store::parse_log_filter(filters, audit ? store::LogKind::audit : store::LogKind::traffic,
                                       store::Clock::now());
    } catch (const store::FilterError& error) {
        throw ControlError(Kind::bad_request, "bad_field", error.what(), error.hint());
    }
}

ControlError unknown_property(std::string_view name) {
    return {Kind::bad_request, "unknown_property", "no property " + std::string(name),
            "com.tameflare.Daemon1.xml lists the properties"};
}

}  // namespace

// ---------------------------------------------------------------------------
// Values and errors

std::string signature_of(const BusValue& value) {
    static constexpr const char* kSignatures[] = {"s",  "b",     "i",        "u",          "t",
                                                  "as", "a{ss}", "a(ssuus)", "a(sssssst)", "h"};
    static_assert(std::size(kSignatures) == std::variant_size_v<BusValue>);
    return kSignatures[value.index()];
}

template <typename T>
const T& CallArgs::at(std::size_t i) const {
    const T* value = i < values_.size() ? std::get_if<T>(&values_[i]) : nullptr;
    if (value == nullptr) {
        throw ControlError(Kind::bad_request, "bad_arguments",
                           "argument " + std::to_string(i + 1) + " is missing or of another type",
                           "com.tameflare.Daemon1.xml gives each method's signature");
    }
    return *value;
}

std::string error_name(std::string_view code) {
    std::string name(kErrorPrefix);
    bool upper = true;
    for (const char c : code) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0) {
            upper = true;
            continue;
        }
        name.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
        upper = false;
    }
    if (name.size() == kErrorPrefix.size()) name += "Internal";
    return name;
}

Failure failure_of(const std::exception& error) {
    if (const auto* refused = dynamic_cast<const ControlError*>(&error)) {
        std::string text = refused->what();
        if (!refused->hint().empty()) text += " (hint: " + refused->hint() + ")";
        return {error_name(refused->code()), text};
    }
    return {error_name("internal"), std::string("internal error: ") + error.what()};
}

// ---------------------------------------------------------------------------
// Methods

namespace {

using Body = std::optional<BusValue> (*)(control::Control&, MethodCall&, Identity&);

struct Method {
    ObjectKind object;
    std::string_view member;
    Effect effect;
    Body body;
};

std::optional<BusValue> text_reply(const json& value) {
    return BusValue{dump(value)};
}

std::optional<BusValue> reload(control::Control& control, MethodCall& /*call*/, Identity& id) {
    const auto result = control.reload(id.caller);
    if (result.reloaded) return std::nullopt;
    // Refused: the caller's to fix. The first error is in the message; CheckConfig lists them all.
    const auto& errors = result.errors;
    const std::string first = errors.empty() ? std::string("the configuration does not load") : errors.front().message;
    throw ControlError(
        Kind::bad_request, "config_invalid",
        std::to_string(errors.size()) + " error(s) in the configuration; the running one stays in force: " + first,
        "CheckConfig lists every error; fix them and reload again");
}

std::optional<BusValue> test_request(control::Control& control, MethodCall& call, Identity& id) {
    const auto& text = call.args.text(0);
    control.authorize(id.caller, Role::viewer);
    const auto request = json::parse(text, nullptr, false);
    if (request.is_discarded() || !request.is_object()) {
        throw ControlError(Kind::bad_request, "bad_json", "request_json is not a JSON object",
                           R"(e.g. {"gateway": "ci", "method": "GET", "url": "https://api.github.com/user"})");
    }
    return text_reply(control.test_request(id.caller, request));
}

std::optional<BusValue> launch(control::Control& control, MethodCall& call, Identity& id) {
    const auto& args = call.args;
    json request{{"gateway", args.text(0)}, {"argv", args.strings(3)}, {"env", args.strings(4)}};
    if (!args.text(1).empty()) request["name"] = args.text(1);
    if (!args.text(2).empty()) request["isolation"] = args.text(2);
    // The message owns its descriptors; the agent gets copies.
    std::vector<UniqueFd> copies;
    for (std::size_t i = 5; i < 9; ++i) {
        copies.emplace_back(::fcntl(args.fd(i), F_DUPFD_CLOEXEC, 3));
        if (!copies.back()) {
            throw ControlError(
                Kind::bad_request, "bad_fd",
                "descriptor " + std::to_string(i - 4) + " of Launch cannot be used: " + std::strerror(errno),
                "pass the agent's stdin, stdout, stderr and working directory as open descriptors");
        }
    }
    Caller caller = id.caller;
    caller.process = std::make_shared<const UniqueFd>(std::move(id.pidfd));
    return BusValue{control.launch(caller, request, std::move(copies))};
}

std::optional<BusValue> query_log(control::Control& control, MethodCall& call, Identity& id, bool audit) {
    const auto& filters = call.args.pairs(0);
    // The role before the filters: a refused caller learns nothing of them.
    control.authorize(id.caller, Role::viewer);
    const auto filter = log_filter(filters, audit);
    std::ostringstream out;
    if (audit) {
        store::AuditWriter writer(out, store::Format::jsonl);
        writer.header();
        control.audit(id.caller, filter, [&](const store::AuditRecord& record) { writer.write(record); });
    } else {
        store::TrafficWriter writer(out, store::Format::jsonl);
        writer.header();
        control.traffic(id.caller, filter, [&](const store::TrafficRow& row) { writer.write(row); });
    }
    auto text = std::move(out).str();
    if (text.size() > kMaxLogReply) {
        throw ControlError(Kind::too_large, "too_large",
                           "the answer is " + std::to_string(text.size() >> 20) + " MiB, more than a D-Bus reply holds",
                           "narrow it: since, limit or another filter; or use tf or the REST socket");
    }
    return BusValue{std::move(text)};
}

// The main object's methods and the sub-objects' (whose subject is the
// object's label), as com.tameflare.Daemon1.xml lists them.
// NOLINTNEXTLINE(readability-function-size): one line per method of the interface
const std::vector<Method>& methods() {
    using O = ObjectKind;
    using C = control::Control;
    using M = MethodCall;
    using I = Identity;
    static const std::vector<Method> table{
        {O::main, "GetStatus", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.status(id.caller))); }},
        {O::main, "ListGateways", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.gateways(id.caller))); }},
        {O::main, "GetGateway", Effect::read,
         [](C& c, M& m, I& id) { return text_reply(control::to_json(c.gateway(id.caller, m.args.text(0)))); }},
        {O::main, "SetEnforcement", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.set_enforcement(id.caller, m.args.text(0), m.args.text(1));
             return std::nullopt;
         }},
        {O::main, "Reload", Effect::change, reload},
        {O::main, "CheckConfig", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.check_config(id.caller))); }},
        {O::main, "TestRequest", Effect::read, test_request},
        {O::main, "ListAgents", Effect::read,
         [](C& c, M&, I& id) -> std::optional<BusValue> {
             std::vector<AgentRow> rows;
             for (const auto& agent : c.agents(id.caller)) rows.push_back(row_of(agent));
             return BusValue{std::move(rows)};
         }},
        {O::main, "StopAgent", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.stop_agent(id.caller, m.args.text(0));
             return std::nullopt;
         }},
        {O::main, "Launch", Effect::change, launch},
        {O::main, "ListApprovals", Effect::read,
         [](C& c, M&, I& id) -> std::optional<BusValue> {
             std::vector<ApprovalRow> rows;
             for (const auto& approval : c.approvals(id.caller)) rows.push_back(row_of(approval));
             return BusValue{std::move(rows)};
         }},
        {O::main, "Approve", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.answer(id.caller, m.args.text(0), true, m.args.text(1));
             return std::nullopt;
         }},
        {O::main, "Deny", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.answer(id.caller, m.args.text(0), false, m.args.text(1));
             return std::nullopt;
         }},
        {O::main, "SetKillSwitch", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             const auto& scope = m.args.text(1);
             c.set_kill_switch(id.caller, m.args.boolean(0), scope.empty() ? "all" : scope, m.args.text(2));
             return std::nullopt;
         }},
        {O::main, "GetKillSwitch", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.kill_switch(id.caller))); }},
        {O::main, "QueryTraffic", Effect::read, [](C& c, M& m, I& id) { return query_log(c, m, id, false); }},
        {O::main, "QueryAudit", Effect::read, [](C& c, M& m, I& id) { return query_log(c, m, id, true); }},
        {O::main, "VerifyAudit", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.verify_audit(id.caller))); }},
        {O::main, "ListSecrets", Effect::read,
         [](C& c, M&, I& id) { return text_reply(control::to_json(c.vault(id.caller))); }},
        {O::main, "SetSecret", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.vault_set(id.caller, m.args.text(0), m.args.text(1), m.args.text(2));
             return std::nullopt;
         }},
        {O::main, "RemoveSecret", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.vault_remove(id.caller, m.args.text(0));
             return std::nullopt;
         }},
        {O::main, "RotateVaultKey", Effect::change,
         [](C& c, M&, I& id) -> std::optional<BusValue> {
             return BusValue{static_cast<std::uint32_t>(c.vault_rotate(id.caller).rotated)};
         }},
        {O::main, "GetMetrics", Effect::read,
         [](C& c, M&, I& id) -> std::optional<BusValue> { return BusValue{c.metrics(id.caller)}; }},
        {O::gateway, "SetEnforcement", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.set_enforcement(id.caller, m.label, m.args.text(0));
             return std::nullopt;
         }},
        {O::agent, "Stop", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.stop_agent(id.caller, m.label);
             return std::nullopt;
         }},
        {O::approval, "Approve", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.answer(id.caller, m.label, true, m.args.text(0));
             return std::nullopt;
         }},
        {O::approval, "Deny", Effect::change,
         [](C& c, M& m, I& id) -> std::optional<BusValue> {
             c.answer(id.caller, m.label, false, m.args.text(0));
             return std::nullopt;
         }},
    };
    return table;
}

const Method* find_method(ObjectKind object, std::string_view member) {
    const auto& table = methods();
    const auto found = std::find_if(table.begin(), table.end(), [&](const Method& method) {
        return method.object == object && method.member == member;
    });
    return found == table.end() ? nullptr : &*found;
}

}  // namespace

BusFront::BusFront(control::Control& control, BusSources sources) : control_(control), sources_(sources) {}

void BusFront::load() {
    for (const auto& request : sources_.approvals->pending()) approvals_[request.id] = request;
    if (sources_.agents != nullptr) {
        for (const auto& agent : sources_.agents->list()) agents_[agent.id] = agent;
    }
    for (const auto& [name, gateway] : sources_.config->snapshot()->gateways) gateways_.insert(name);
}

Effect BusFront::effect_of(ObjectKind object, std::string_view member) {
    const auto* method = find_method(object, member);
    return method == nullptr ? Effect::change : method->effect;
}

std::optional<BusValue> BusFront::call(MethodCall& call, Identity& identity) {
    const auto* method = find_method(call.object, call.member);
    if (method == nullptr) {
        throw ControlError(Kind::bad_request, "unknown_method", "no method " + call.member,
                           "com.tameflare.Daemon1.xml lists the methods");
    }
    auto reply = method->body(control_, call, identity);
    // Only the connection that launched an agent hears its Exited.
    if (call.object == ObjectKind::main && call.member == "Launch" && reply && !call.sender.empty()) {
        launchers_[std::get<std::string>(*reply)] = call.sender;
    }
    return reply;
}

// ---------------------------------------------------------------------------
// Properties

BusValue BusFront::property(ObjectKind object, const std::string& label, std::string_view name, const Caller* caller) {
    switch (object) {
        case ObjectKind::main: return main_property(name, caller);
        case ObjectKind::gateway: return gateway_property(label, name, caller);
        case ObjectKind::agent: return agent_property(label, name, caller);
        case ObjectKind::approval: return approval_property(label, name, caller);
    }
    throw unknown_property(name);
}

BusValue BusFront::main_property(std::string_view name, const Caller* caller) {
    if (caller != nullptr) control_.authorize(*caller, Role::viewer);
    if (name == "Version") return std::string(TF_VERSION);
    if (name == "KillSwitch" || name == "KillSwitchScope") {
        const auto kill = caller == nullptr ? kill_ : control_.kill_switch(*caller);
        if (name == "KillSwitch") return kill.active();
        return kill.scopes();
    }
    if (name == "PendingApprovals") {
        const auto size = caller == nullptr ? approvals_.size() : control_.approvals(*caller).size();
        return static_cast<std::uint32_t>(size);
    }
    if (name == "Agents") {
        const auto size = caller == nullptr ? agents_.size() : control_.agents(*caller).size();
        return static_cast<std::uint32_t>(size);
    }
    throw unknown_property(name);
}

BusValue BusFront::gateway_property(const std::string& label, std::string_view name, const Caller* caller) {
    // The daemon's own emissions read the configuration in force.
    const auto view = caller == nullptr ? control::GatewayView{sources_.config->snapshot(), nullptr}
                                        : control_.gateway(*caller, label);
    const policy::Gateway* gateway = caller == nullptr ? view.config->gateway(label) : view.gateway;
    if (gateway == nullptr) throw ControlError(Kind::not_found, "unknown_gateway", "no gateway " + label);
    if (name == "Name") return gateway->name;
    if (name == "EnforcementLevel") return std::string(policy::to_string(gateway->enforcement));
    if (name == "Connectors") {
        std::vector<std::string> names;
        for (const auto& connector : gateway->connectors) names.push_back(connector.name);
        return names;
    }
    throw unknown_property(name);
}

BusValue BusFront::agent_property(const std::string& label, std::string_view name, const Caller* caller) {
    control::AgentInfo agent;
    if (caller != nullptr) {
        agent = control_.agent(*caller, label);
    } else if (const auto found = agents_.find(label); found != agents_.end()) {
        agent = found->second;
    } else {
        throw ControlError(Kind::not_found, "unknown_agent", "no agent " + label);
    }
    if (name == "Id") return agent.id;
    if (name == "Gateway") return agent.gateway;
    if (name == "Uid") return static_cast<std::uint32_t>(agent.uid);
    if (name == "Pid") return static_cast<std::uint32_t>(agent.pid);
    if (name == "Isolation") return agent.isolation;
    throw unknown_property(name);
}

BusValue BusFront::approval_property(const std::string& label, std::string_view name, const Caller* caller) {
    control::Approval approval;
    if (caller != nullptr) {
        approval = control_.approval(*caller, label);
    } else if (const auto found = approvals_.find(label); found != approvals_.end()) {
        approval = found->second;
    } else {
        throw ControlError(Kind::not_found, "unknown_approval", "no pending approval " + label);
    }
    if (name == "Id") return approval.id;
    if (name == "Gateway") return approval.gateway;
    if (name == "Agent") return approval.agent;
    if (name == "Action") return approval.action;
    if (name == "Risk") return approval.risk;
    if (name == "Parameters") return parameters_text(approval);
    if (name == "AgeSeconds") return control::age_seconds(approval);
    throw unknown_property(name);
}

std::vector<std::string> BusFront::labels(ObjectKind object, bool own) const {
    std::vector<std::string> out;
    switch (object) {
        case ObjectKind::main: break;
        case ObjectKind::gateway:
            if (own) return {gateways_.begin(), gateways_.end()};
            for (const auto& [name, gateway] : sources_.config->snapshot()->gateways) out.push_back(name);
            break;
        case ObjectKind::agent:
            if (own) {
                for (const auto& [id, agent] : agents_) out.push_back(id);
            } else if (sources_.agents != nullptr) {
                for (const auto& agent : sources_.agents->list()) out.push_back(agent.id);
            }
            break;
        case ObjectKind::approval:
            if (own) {
                for (const auto& [id, approval] : approvals_) out.push_back(id);
            } else {
                for (const auto& request : sources_.approvals->pending()) out.push_back(request.id);
            }
            break;
    }
    return out;
}

// ---------------------------------------------------------------------------
// Events

namespace {

Emission signal(std::string member, std::vector<BusValue> args) {
    Emission out;
    out.kind = Emission::Kind::signal;
    out.path = kObjectPath;
    out.interface = kInterface;
    out.member = std::move(member);
    out.args = std::move(args);
    return out;
}

Emission object(Emission::Kind kind, std::string path) {
    Emission out;
    out.kind = kind;
    out.path = std::move(path);
    return out;
}

Emission changed(std::string path, std::string interface, std::vector<std::string> properties) {
    Emission out;
    out.kind = Emission::Kind::changed;
    out.path = std::move(path);
    out.interface = std::move(interface);
    out.properties = std::move(properties);
    return out;
}

}  // namespace

// NOLINTNEXTLINE(readability-function-size): one branch per event the bus shows
std::vector<Emission> BusFront::apply(const control::Event& event) {
    const auto& data = event.data;
    std::vector<Emission> out;
    if (event.type == "approval.requested") {
        const auto approval = control::approval_from_json(data);
        approvals_[approval.id] = approval;
        out.push_back(signal("ApprovalRequested", {approval.id, approval.gateway, approval.agent, approval.action,
                                                   approval.risk, parameters_text(approval)}));
        out.push_back(object(Emission::Kind::added, path_of(kApprovalPrefix, approval.id)));
        out.push_back(changed(kObjectPath, kInterface, {"PendingApprovals"}));
    } else if (event.type == "approval.resolved") {
        const std::string id = control::text_member(data, "id");
        std::string note = control::text_member(data, "note");
        if (note.empty() && control::flag_member(data, "expired")) note = "expired";
        out.push_back(signal("ApprovalResolved",
                             {id, control::flag_member(data, "approved"), control::text_member(data, "actor"), note}));
        // Removed while still known: the InterfacesRemoved lists its interfaces.
        if (approvals_.count(id) != 0) {
            out.push_back(object(Emission::Kind::removed, path_of(kApprovalPrefix, id)));
            approvals_.erase(id);
            out.push_back(changed(kObjectPath, kInterface, {"PendingApprovals"}));
        }
    } else if (event.type == "kill_switch.changed") {
        kill_ = control::kill_switch_from_json(data);
        out.push_back(signal("KillSwitchChanged", {kill_.active(), kill_.reason, kill_.actor}));
        out.push_back(changed(kObjectPath, kInterface, {"KillSwitch", "KillSwitchScope"}));
    } else if (event.type == "agent.started") {
        const auto agent = control::agent_from_json(data);
        agents_[agent.id] = agent;
        out.push_back(signal("AgentStarted", {agent.id, agent.gateway, static_cast<std::uint32_t>(agent.uid),
                                              static_cast<std::uint32_t>(agent.pid)}));
        out.push_back(object(Emission::Kind::added, path_of(kAgentPrefix, agent.id)));
        out.push_back(changed(kObjectPath, kInterface, {"Agents"}));
    } else if (event.type == "agent.exited") {
        const std::string id = control::text_member(data, "id");
        const auto status = static_cast<std::int32_t>(control::integer_member(data, "status"));
        const std::string path = path_of(kAgentPrefix, id);
        out.push_back(signal("AgentExited", {id, status}));
        // The launcher alone learns the end on the agent's object, which
        // the bus policy lets any user receive (the broadcasts it does not).
        if (const auto launcher = launchers_.find(id); launcher != launchers_.end()) {
            auto exited = signal("Exited", {status});
            exited.path = path;
            exited.interface = kAgentInterface;
            exited.destination = launcher->second;
            out.push_back(std::move(exited));
            launchers_.erase(launcher);
        }
        if (agents_.count(id) != 0) {
            out.push_back(object(Emission::Kind::removed, path));
            agents_.erase(id);
            out.push_back(changed(kObjectPath, kInterface, {"Agents"}));
        }
    } else if (event.type == "config.reloaded") {
        out = sync_gateways();
    } else if (event.type == "enforcement.changed") {
        out = sync_gateways();
        const std::string gateway = control::text_member(data, "gateway");
        if (gateways_.count(gateway) != 0) {
            out.push_back(changed(path_of(kGatewayPrefix, gateway), kGatewayInterface, {"EnforcementLevel"}));
        }
    }
    return out;
}

// Gateway objects come and go with the configuration.
std::vector<Emission> BusFront::sync_gateways() {
    std::set<std::string, std::less<>> now;
    for (const auto& [name, gateway] : sources_.config->snapshot()->gateways) now.insert(name);
    std::vector<Emission> out;
    for (const auto& name : gateways_) {
        if (now.count(name) == 0) out.push_back(object(Emission::Kind::removed, path_of(kGatewayPrefix, name)));
    }
    const auto before = std::exchange(gateways_, now);
    for (const auto& name : now) {
        const std::string path = path_of(kGatewayPrefix, name);
        if (before.count(name) == 0) {
            out.push_back(object(Emission::Kind::added, path));
        } else {
            out.push_back(changed(path, kGatewayInterface, {"Connectors"}));
        }
    }
    return out;
}

}  // namespace tameflare::dbus
