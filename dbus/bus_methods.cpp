// The D-Bus front end's marshalling: sd-bus messages to and from the seam's
// values (bus_front.h), the one method and property handler, sub-object
// look-ups and the vtables. What a call means is BusFront's.
#include "dbus/bus_internal.h"

namespace tameflare::dbus::bus_detail {

using Impl = BusService::Impl;

namespace {

Impl& impl_of(void* userdata) {
    return *static_cast<Impl*>(userdata);
}

template <class... Ts>
struct Overloaded : Ts... {
    using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// The object a message or property belongs to, by its interface.
std::optional<ObjectKind> object_of(std::string_view interface) {
    if (interface == kInterface) return ObjectKind::main;
    if (interface == kGatewayInterface) return ObjectKind::gateway;
    if (interface == kAgentInterface) return ObjectKind::agent;
    if (interface == kApprovalInterface) return ObjectKind::approval;
    return std::nullopt;
}

const char* prefix_of(ObjectKind object) {
    switch (object) {
        case ObjectKind::gateway: return kGatewayPrefix;
        case ObjectKind::agent: return kAgentPrefix;
        case ObjectKind::approval: return kApprovalPrefix;
        case ObjectKind::main: break;
    }
    return kObjectPath;
}

// A sub-object's label from its path; "" for the main object.
std::optional<std::string> label_of(ObjectKind object, const char* path) {
    if (object == ObjectKind::main) return std::string();
    return decode(path, prefix_of(object));
}

int read_string(sd_bus_message* message, std::vector<BusValue>& out) {
    const char* value = nullptr;
    const int r = sd_bus_message_read(message, "s", &value);
    if (r > 0) out.emplace_back(std::string(value));
    return r;
}

int read_array(sd_bus_message* message, std::string_view contents, std::vector<BusValue>& out) {
    if (contents == "s") {
        std::vector<std::string> values;
        const int r = read_strings(message, values);
        if (r >= 0) out.emplace_back(std::move(values));
        return r;
    }
    if (contents == "{ss}") {
        StringPairs values;
        const int r = read_filters(message, values);
        if (r >= 0) out.emplace_back(std::move(values));
        return r;
    }
    return -EINVAL;
}

}  // namespace

int read_arguments(sd_bus_message* message, std::vector<BusValue>& out) {
    for (;;) {
        char type = 0;
        const char* contents = nullptr;
        int r = sd_bus_message_peek_type(message, &type, &contents);
        if (r <= 0) return r;
        if (type == 's') {
            r = read_string(message, out);
        } else if (type == 'b') {
            int value = 0;
            r = sd_bus_message_read(message, "b", &value);
            out.emplace_back(value != 0);
        } else if (type == 'h') {
            int fd = -1;
            r = sd_bus_message_read(message, "h", &fd);
            out.emplace_back(BorrowedFd{fd});
        } else if (type == 'a') {
            r = read_array(message, contents == nullptr ? "" : contents, out);
        } else {
            r = -EINVAL;  // no method of the interface takes one
        }
        if (r < 0) return r;
    }
}

int append_value(sd_bus_message* message, const BusValue& value) {
    const auto text = [](const std::string& raw) { return valid_utf8(raw); };
    return std::visit(
        Overloaded{
            [&](const std::string& v) { return sd_bus_message_append(message, "s", text(v).c_str()); },
            [&](bool v) { return sd_bus_message_append(message, "b", v ? 1 : 0); },
            [&](std::int32_t v) { return sd_bus_message_append(message, "i", v); },
            [&](std::uint32_t v) { return sd_bus_message_append(message, "u", v); },
            [&](std::uint64_t v) { return sd_bus_message_append(message, "t", v); },
            [&](const std::vector<std::string>& v) { return append_strings(message, v); },
            [&](const StringPairs& v) {
                int r = sd_bus_message_open_container(message, 'a', "{ss}");
                for (const auto& [key, item] : v) {
                    if (r >= 0) r = sd_bus_message_append(message, "{ss}", text(key).c_str(), text(item).c_str());
                }
                return r < 0 ? r : sd_bus_message_close_container(message);
            },
            [&](const std::vector<AgentRow>& v) {
                int r = sd_bus_message_open_container(message, 'a', "(ssuus)");
                for (const auto& row : v) {
                    if (r < 0) break;
                    r = sd_bus_message_append(message, "(ssuus)", text(row.id).c_str(), text(row.gateway).c_str(),
                                              row.uid, row.pid, text(row.isolation).c_str());
                }
                return r < 0 ? r : sd_bus_message_close_container(message);
            },
            [&](const std::vector<ApprovalRow>& v) {
                int r = sd_bus_message_open_container(message, 'a', "(sssssst)");
                for (const auto& row : v) {
                    if (r < 0) break;
                    r = sd_bus_message_append(message, "(sssssst)", text(row.id).c_str(), text(row.gateway).c_str(),
                                              text(row.agent).c_str(), text(row.action).c_str(), text(row.risk).c_str(),
                                              text(row.parameters).c_str(), row.age_seconds);
                }
                return r < 0 ? r : sd_bus_message_close_container(message);
            },
            [&](const BorrowedFd& v) { return sd_bus_message_append(message, "h", v.fd); },
        },
        value);
}

// NameOwnerChanged from the bus: connections appearing and going.
int name_owner_changed(sd_bus_message* message, void* userdata, sd_bus_error* /*error*/) {
    auto& impl = impl_of(userdata);
    // Only the bus driver's word counts: anyone may send a signal that looks like it.
    const char* sender = sd_bus_message_get_sender(message);
    if (sender == nullptr || std::strcmp(sender, kBusService) != 0) return 0;
    const char* name = nullptr;
    const char* old_owner = nullptr;
    const char* new_owner = nullptr;
    if (sd_bus_message_read(message, "sss", &name, &old_owner, &new_owner) < 0 || name[0] != ':') return 0;
    if (*new_owner == '\0') {
        impl.forget(name);
    } else if (*old_owner == '\0') {
        impl.track(name);
    }
    return 0;
}

namespace {

// Every method of every object: identify the caller, let BusFront answer,
// send its reply.
int method_handler(sd_bus_message* message, void* userdata, sd_bus_error* error) {
    auto& impl = impl_of(userdata);
    const char* interface = sd_bus_message_get_interface(message);
    const auto object = object_of(interface == nullptr ? "" : interface);
    if (!object) return sd_bus_error_set(error, SD_BUS_ERROR_UNKNOWN_INTERFACE, "no such interface");
    const auto label = label_of(*object, sd_bus_message_get_path(message));
    if (!label) return sd_bus_error_set(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "no such object");
    MethodCall call;
    call.object = *object;
    call.label = *label;
    call.member = sd_bus_message_get_member(message);
    if (const char* sender = sd_bus_message_get_sender(message); sender != nullptr) call.sender = sender;
    std::vector<BusValue> arguments;
    if (const int r = read_arguments(message, arguments); r < 0) return r;
    call.args = CallArgs(std::move(arguments));
    return impl.guarded(message, error, BusFront::effect_of(*object, call.member), [&](Identity& identity) {
        const auto reply = impl.front.call(call, identity);
        if (!reply) return sd_bus_reply_method_return(message, nullptr);
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(message, &raw);
        const MessagePtr out(raw);
        if (r >= 0) r = append_value(out.get(), *reply);
        if (r >= 0) r = sd_bus_send(nullptr, out.get(), nullptr);
        return r;
    });
}

// Every property of every object: for a caller authorized per call; for the
// daemon's own emissions (no message being dispatched) from the caches.
int property_handler(sd_bus* bus, const char* path, const char* interface, const char* property, sd_bus_message* reply,
                     void* userdata, sd_bus_error* error) {
    auto& impl = impl_of(userdata);
    const auto object = object_of(interface);
    if (!object) return -ENOENT;
    const auto label = label_of(*object, path);
    if (!label) return -ENOENT;
    if (Impl::own_emission(bus)) {
        return Impl::guarded_body(
            error, [&] { return append_value(reply, impl.front.property(*object, *label, property, nullptr)); });
    }
    const auto caller = impl.current_caller(bus, error);
    if (!caller) return -EACCES;
    return Impl::guarded_body(
        error, [&] { return append_value(reply, impl.front.property(*object, *label, property, &*caller)); });
}

// ---------------------------------------------------------------------------
// Sub-objects: gateways, agents, approvals

int exists(sd_bus* bus, const char* path, ObjectKind object, void* userdata, void** found) {
    const auto label = decode(path, prefix_of(object));
    if (!label) return 0;
    const auto labels = impl_of(userdata).front.labels(object, Impl::own_emission(bus));
    if (std::find(labels.begin(), labels.end(), *label) == labels.end()) return 0;
    *found = userdata;
    return 1;
}

int enumerate(sd_bus* bus, ObjectKind object, void* userdata, char*** nodes) {
    const auto labels = impl_of(userdata).front.labels(object, Impl::own_emission(bus));
    auto** out = static_cast<char**>(std::calloc(labels.size() + 1, sizeof(char*)));
    if (out == nullptr) return -ENOMEM;
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (sd_bus_path_encode(prefix_of(object), labels[i].c_str(), &out[i]) < 0) {
            for (std::size_t k = 0; k < i; ++k) std::free(out[k]);
            std::free(static_cast<void*>(out));
            return -ENOMEM;
        }
    }
    *nodes = out;
    return 0;
}

}  // namespace

int find_gateway(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
                 sd_bus_error* /*error*/) {
    return exists(bus, path, ObjectKind::gateway, userdata, found);
}

int find_agent(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
               sd_bus_error* /*error*/) {
    return exists(bus, path, ObjectKind::agent, userdata, found);
}

int find_approval(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
                  sd_bus_error* /*error*/) {
    return exists(bus, path, ObjectKind::approval, userdata, found);
}

int enumerate_gateways(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(bus, ObjectKind::gateway, userdata, nodes);
}

int enumerate_agents(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(bus, ObjectKind::agent, userdata, nodes);
}

int enumerate_approvals(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(bus, ObjectKind::approval, userdata, nodes);
}

// ---------------------------------------------------------------------------
// Vtables. Every method is marked unprivileged for sd-bus, whose own check
// would demand CAP_SYS_ADMIN: the daemon authorizes each call itself.

constexpr auto kCall = SD_BUS_VTABLE_UNPRIVILEGED;
constexpr auto kChanges = SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE;
constexpr auto kConst = SD_BUS_VTABLE_PROPERTY_CONST;

const sd_bus_vtable kMainVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Version", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("KillSwitch", "b", property_handler, 0, kChanges),
    SD_BUS_PROPERTY("KillSwitchScope", "as", property_handler, 0, kChanges),
    SD_BUS_PROPERTY("PendingApprovals", "u", property_handler, 0, kChanges),
    SD_BUS_PROPERTY("Agents", "u", property_handler, 0, kChanges),
    SD_BUS_METHOD_WITH_NAMES("GetStatus", "", "", "s", SD_BUS_PARAM(status_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListGateways", "", "", "s", SD_BUS_PARAM(gateways_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetGateway", "s", SD_BUS_PARAM(name), "s", SD_BUS_PARAM(gateway_json), method_handler,
                             kCall),
    SD_BUS_METHOD_WITH_NAMES("SetEnforcement", "ss", SD_BUS_PARAM(gateway) SD_BUS_PARAM(level), "", "", method_handler,
                             kCall),
    SD_BUS_METHOD_WITH_NAMES("Reload", "", "", "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("CheckConfig", "", "", "s", SD_BUS_PARAM(result_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("TestRequest", "s", SD_BUS_PARAM(request_json), "s", SD_BUS_PARAM(decision_json),
                             method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListAgents", "", "", "a(ssuus)", SD_BUS_PARAM(agents), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("StopAgent", "s", SD_BUS_PARAM(id), "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("Launch", "sssasashhhh",
                             SD_BUS_PARAM(gateway) SD_BUS_PARAM(name) SD_BUS_PARAM(isolation) SD_BUS_PARAM(argv)
                                 SD_BUS_PARAM(env) SD_BUS_PARAM(stdin) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr)
                                     SD_BUS_PARAM(cwd),
                             "s", SD_BUS_PARAM(agent_id), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListApprovals", "", "", "a(sssssst)", SD_BUS_PARAM(approvals), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("Approve", "ss", SD_BUS_PARAM(id) SD_BUS_PARAM(note), "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("Deny", "ss", SD_BUS_PARAM(id) SD_BUS_PARAM(note), "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("SetKillSwitch", "bss", SD_BUS_PARAM(active) SD_BUS_PARAM(scope) SD_BUS_PARAM(reason), "",
                             "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetKillSwitch", "", "", "s", SD_BUS_PARAM(kill_switch_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("QueryTraffic", "a{ss}", SD_BUS_PARAM(filters), "s", SD_BUS_PARAM(rows_jsonl),
                             method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("QueryAudit", "a{ss}", SD_BUS_PARAM(filters), "s", SD_BUS_PARAM(records_jsonl),
                             method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("VerifyAudit", "", "", "s", SD_BUS_PARAM(report_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListSecrets", "", "", "s", SD_BUS_PARAM(secrets_json), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("SetSecret", "sss", SD_BUS_PARAM(name) SD_BUS_PARAM(connector) SD_BUS_PARAM(value), "", "",
                             method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("RemoveSecret", "s", SD_BUS_PARAM(name), "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("RotateVaultKey", "", "", "u", SD_BUS_PARAM(count), method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetMetrics", "", "", "s", SD_BUS_PARAM(metrics_text), method_handler, kCall),
    SD_BUS_SIGNAL_WITH_NAMES("ApprovalRequested", "ssssss",
                             SD_BUS_PARAM(id) SD_BUS_PARAM(gateway) SD_BUS_PARAM(agent) SD_BUS_PARAM(action)
                                 SD_BUS_PARAM(risk) SD_BUS_PARAM(parameters_json),
                             0),
    SD_BUS_SIGNAL_WITH_NAMES("ApprovalResolved", "sbss",
                             SD_BUS_PARAM(id) SD_BUS_PARAM(approved) SD_BUS_PARAM(actor) SD_BUS_PARAM(note), 0),
    SD_BUS_SIGNAL_WITH_NAMES("KillSwitchChanged", "bss", SD_BUS_PARAM(active) SD_BUS_PARAM(reason) SD_BUS_PARAM(actor),
                             0),
    SD_BUS_SIGNAL_WITH_NAMES("AgentStarted", "ssuu",
                             SD_BUS_PARAM(id) SD_BUS_PARAM(gateway) SD_BUS_PARAM(uid) SD_BUS_PARAM(pid), 0),
    SD_BUS_SIGNAL_WITH_NAMES("AgentExited", "si", SD_BUS_PARAM(id) SD_BUS_PARAM(status), 0),
    SD_BUS_VTABLE_END,
};

const sd_bus_vtable kGatewayVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Name", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("EnforcementLevel", "s", property_handler, 0, kChanges),
    SD_BUS_PROPERTY("Connectors", "as", property_handler, 0, kChanges),
    SD_BUS_METHOD_WITH_NAMES("SetEnforcement", "s", SD_BUS_PARAM(level), "", "", method_handler, kCall),
    SD_BUS_VTABLE_END,
};

const sd_bus_vtable kAgentVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Id", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Gateway", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Uid", "u", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Pid", "u", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Isolation", "s", property_handler, 0, kConst),
    SD_BUS_METHOD_WITH_NAMES("Stop", "", "", "", "", method_handler, kCall),
    // Sent to the connection that launched the agent only.
    SD_BUS_SIGNAL_WITH_NAMES("Exited", "i", SD_BUS_PARAM(status), 0),
    SD_BUS_VTABLE_END,
};

const sd_bus_vtable kApprovalVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Id", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Gateway", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Agent", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Action", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Risk", "s", property_handler, 0, kConst),
    SD_BUS_PROPERTY("Parameters", "s", property_handler, 0, kConst),
    // Grows by itself; read it when needed.
    SD_BUS_PROPERTY("AgeSeconds", "t", property_handler, 0, 0),
    SD_BUS_METHOD_WITH_NAMES("Approve", "s", SD_BUS_PARAM(note), "", "", method_handler, kCall),
    SD_BUS_METHOD_WITH_NAMES("Deny", "s", SD_BUS_PARAM(note), "", "", method_handler, kCall),
    SD_BUS_VTABLE_END,
};

}  // namespace tameflare::dbus::bus_detail
