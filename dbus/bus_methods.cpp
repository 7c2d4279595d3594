#include "dbus/bus_internal.h"

namespace tameflare::dbus::bus_detail {

using Impl = BusService::Impl;

Impl& impl_of(void* userdata) {
    return *static_cast<Impl*>(userdata);
}

int reply_string(sd_bus_message* message, const std::string& text) {
    return sd_bus_reply_method_return(message, "s", valid_utf8(text).c_str());
}

int reply_json(sd_bus_message* message, const json& value) {
    return reply_string(message, dump(value));
}

int reply_empty(sd_bus_message* message) {
    return sd_bus_reply_method_return(message, nullptr);
}

// A method of the main interface: identify, authorize and answer in `body`.
template <int (*Body)(Impl&, sd_bus_message*, Identity&)>
int method(sd_bus_message* message, void* userdata, sd_bus_error* error, Effect effect) {
    auto& impl = impl_of(userdata);
    return impl.guarded(message, error, effect, [&](Identity& identity) { return Body(impl, message, identity); });
}
// One that only reads.
template <int (*Body)(Impl&, sd_bus_message*, Identity&)>
int reads(sd_bus_message* message, void* userdata, sd_bus_error* error) {
    return method<Body>(message, userdata, error, Effect::read);
}
// One that changes state.
template <int (*Body)(Impl&, sd_bus_message*, Identity&)>
int changes(sd_bus_message* message, void* userdata, sd_bus_error* error) {
    return method<Body>(message, userdata, error, Effect::change);
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

int get_status(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.status(id.caller)));
}

int list_gateways(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.gateways(id.caller)));
}

int get_gateway(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* name = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &name); r < 0) return r;
    return reply_json(m, control::to_json(impl.control.gateway(id.caller, name)));
}

int set_enforcement(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* gateway = nullptr;
    const char* level = nullptr;
    if (const int r = sd_bus_message_read(m, "ss", &gateway, &level); r < 0) return r;
    impl.control.set_enforcement(id.caller, gateway, level);
    return reply_empty(m);
}

int reload(Impl& impl, sd_bus_message* m, Identity& id) {
    const auto result = impl.control.reload(id.caller);
    if (!result.reloaded) {
        // Refused: the caller's to fix. The first error is in the message; CheckConfig lists them all.
        const auto& errors = result.errors;
        const std::string first =
            errors.empty() ? std::string("the configuration does not load") : errors.front().message;
        throw ControlError(
            ControlError::Kind::bad_request, "config_invalid",
            std::to_string(errors.size()) + " error(s) in the configuration; the running one stays in force: " + first,
            "CheckConfig lists every error; fix them and reload again");
    }
    return reply_empty(m);
}

int check_config(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.check_config(id.caller)));
}

int test_request(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* text = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &text); r < 0) return r;
    impl.control.authorize(id.caller, Role::viewer);
    const auto request = json::parse(text, nullptr, false);
    if (request.is_discarded() || !request.is_object()) {
        throw ControlError(ControlError::Kind::bad_request, "bad_json", "request_json is not a JSON object",
                           R"(e.g. {"gateway": "ci", "method": "GET", "url": "https://api.github.com/user"})");
    }
    return reply_json(m, impl.control.test_request(id.caller, request));
}

int list_agents(Impl& impl, sd_bus_message* m, Identity& id) {
    const auto listed = impl.control.agents(id.caller);
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    const MessagePtr reply(raw);
    if (r >= 0) r = sd_bus_message_open_container(reply.get(), 'a', "(ssuus)");
    for (const auto& agent : listed) {
        if (r < 0) break;
        r = sd_bus_message_append(reply.get(), "(ssuus)", valid_utf8(agent.id).c_str(),
                                  valid_utf8(agent.gateway).c_str(), static_cast<std::uint32_t>(agent.uid),
                                  static_cast<std::uint32_t>(agent.pid), valid_utf8(agent.isolation).c_str());
    }
    if (r >= 0) r = sd_bus_message_close_container(reply.get());
    if (r >= 0) r = sd_bus_send(nullptr, reply.get(), nullptr);
    return r;
}

int stop_agent(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* agent = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &agent); r < 0) return r;
    impl.control.stop_agent(id.caller, agent);
    return reply_empty(m);
}

int launch(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* gateway = nullptr;
    const char* name = nullptr;
    const char* isolation = nullptr;
    std::vector<std::string> argv;
    std::vector<std::string> env;
    int r = sd_bus_message_read(m, "sss", &gateway, &name, &isolation);
    if (r >= 0) r = read_strings(m, argv);
    if (r >= 0) r = read_strings(m, env);
    int fds[4] = {-1, -1, -1, -1};
    if (r >= 0) r = sd_bus_message_read(m, "hhhh", &fds[0], &fds[1], &fds[2], &fds[3]);
    if (r < 0) return r;
    json request{{"gateway", gateway}, {"argv", argv}, {"env", env}};
    if (*name != '\0') request["name"] = name;
    if (*isolation != '\0') request["isolation"] = isolation;
    // The message owns its descriptors; the agent gets copies.
    std::vector<UniqueFd> copies;
    for (const int fd : fds) {
        copies.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!copies.back()) return -errno;
    }
    Caller caller = id.caller;
    caller.process = std::make_shared<const UniqueFd>(std::move(id.pidfd));
    const std::string agent = impl.control.launch(caller, request, std::move(copies));
    if (const char* sender = sd_bus_message_get_sender(m); sender != nullptr) impl.launchers[agent] = sender;
    return reply_string(m, agent);
}

int list_approvals(Impl& impl, sd_bus_message* m, Identity& id) {
    const auto listed = impl.control.approvals(id.caller);
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    const MessagePtr reply(raw);
    if (r >= 0) r = sd_bus_message_open_container(reply.get(), 'a', "(sssssst)");
    for (const auto& approval : listed) {
        if (r < 0) break;
        r = sd_bus_message_append(reply.get(), "(sssssst)", valid_utf8(approval.id).c_str(),
                                  valid_utf8(approval.gateway).c_str(), valid_utf8(approval.agent).c_str(),
                                  valid_utf8(approval.action).c_str(), valid_utf8(approval.risk).c_str(),
                                  dump(control::to_json(approval).value("parameters", json::object())).c_str(),
                                  control::age_seconds(approval));
    }
    if (r >= 0) r = sd_bus_message_close_container(reply.get());
    if (r >= 0) r = sd_bus_send(nullptr, reply.get(), nullptr);
    return r;
}

int answer(Impl& impl, sd_bus_message* m, Identity& id, bool approve) {
    const char* approval = nullptr;
    const char* note = nullptr;
    if (const int r = sd_bus_message_read(m, "ss", &approval, &note); r < 0) return r;
    impl.control.answer(id.caller, approval, approve, note);
    return reply_empty(m);
}

int approve(Impl& impl, sd_bus_message* m, Identity& id) {
    return answer(impl, m, id, true);
}

int deny(Impl& impl, sd_bus_message* m, Identity& id) {
    return answer(impl, m, id, false);
}

int set_kill_switch(Impl& impl, sd_bus_message* m, Identity& id) {
    int active = 0;
    const char* scope = nullptr;
    const char* reason = nullptr;
    if (const int r = sd_bus_message_read(m, "bss", &active, &scope, &reason); r < 0) return r;
    impl.control.set_kill_switch(id.caller, active != 0, *scope == '\0' ? "all" : scope, reason);
    return reply_empty(m);
}

int get_kill_switch(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.kill_switch(id.caller)));
}

int query_log(Impl& impl, sd_bus_message* m, Identity& id, bool audit) {
    std::vector<std::pair<std::string, std::string>> filters;
    if (const int r = read_filters(m, filters); r < 0) return r;
    // The role before the filters: a refused caller learns nothing of them.
    impl.control.authorize(id.caller, Role::viewer);
    const auto filter = log_filter(filters, audit);
    std::ostringstream out;
    if (audit) {
        store::AuditWriter writer(out, store::Format::jsonl);
        writer.header();
        impl.control.audit(id.caller, filter, [&](const store::AuditRecord& record) { writer.write(record); });
    } else {
        store::TrafficWriter writer(out, store::Format::jsonl);
        writer.header();
        impl.control.traffic(id.caller, filter, [&](const store::TrafficRow& row) { writer.write(row); });
    }
    auto text = std::move(out).str();
    if (text.size() > kMaxLogReply) {
        throw ControlError(ControlError::Kind::too_large, "too_large",
                           "the answer is " + std::to_string(text.size() >> 20) + " MiB, more than a D-Bus reply holds",
                           "narrow it: since, limit or another filter; or use tf or the REST socket");
    }
    return reply_string(m, text);
}

int query_traffic(Impl& impl, sd_bus_message* m, Identity& id) {
    return query_log(impl, m, id, false);
}

int query_audit(Impl& impl, sd_bus_message* m, Identity& id) {
    return query_log(impl, m, id, true);
}

int verify_audit(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.verify_audit(id.caller)));
}

int list_secrets(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, control::to_json(impl.control.vault(id.caller)));
}

int set_secret(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* name = nullptr;
    const char* connector = nullptr;
    const char* value = nullptr;
    if (const int r = sd_bus_message_read(m, "sss", &name, &connector, &value); r < 0) return r;
    impl.control.vault_set(id.caller, name, connector, value);
    return reply_empty(m);
}

int remove_secret(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* name = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &name); r < 0) return r;
    impl.control.vault_remove(id.caller, name);
    return reply_empty(m);
}

int rotate_vault_key(Impl& impl, sd_bus_message* m, Identity& id) {
    const auto rotated = impl.control.vault_rotate(id.caller);
    return sd_bus_reply_method_return(m, "u", static_cast<std::uint32_t>(rotated.rotated));
}

int get_metrics(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_string(m, impl.control.metrics(id.caller));
}

// ---------------------------------------------------------------------------
// Properties of the main object

int main_property(sd_bus* bus, const char* /*path*/, const char* /*interface*/, const char* property,
                  sd_bus_message* reply, void* userdata, sd_bus_error* error) {
    auto& impl = impl_of(userdata);
    const std::string_view name(property);
    if (Impl::own_emission(bus)) {
        if (name == "Version") return sd_bus_message_append(reply, "s", TF_VERSION);
        if (name == "KillSwitch") return sd_bus_message_append(reply, "b", impl.kill.value("active", false) ? 1 : 0);
        if (name == "KillSwitchScope") return append_strings(reply, kill_scopes(impl.kill));
        if (name == "PendingApprovals") {
            return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(impl.approvals.size()));
        }
        if (name == "Agents") return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(impl.agents.size()));
        return -ENOENT;
    }
    const auto caller = impl.current_caller(bus, error);
    if (!caller) return -EACCES;
    return Impl::guarded_body(error, [&] {
        impl.control.authorize(*caller, Role::viewer);
        if (name == "Version") return sd_bus_message_append(reply, "s", TF_VERSION);
        if (name == "KillSwitch" || name == "KillSwitchScope") {
            const auto kill = impl.control.kill_switch(*caller);
            if (name == "KillSwitch") return sd_bus_message_append(reply, "b", kill.active() ? 1 : 0);
            return append_strings(reply, kill.scopes());
        }
        if (name == "PendingApprovals") {
            const auto size = impl.control.approvals(*caller).size();
            return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(size));
        }
        if (name == "Agents") {
            const auto size = impl.control.agents(*caller).size();
            return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(size));
        }
        return -ENOENT;
    });
}

// ---------------------------------------------------------------------------
// Sub-objects: gateways, agents, approvals

template <std::vector<std::string> (Impl::*Ids)(sd_bus*) const>
int exists(sd_bus* bus, const char* path, const char* prefix, void* userdata, void** found) {
    const auto label = decode(path, prefix);
    if (!label) return 0;
    const auto ids = (impl_of(userdata).*Ids)(bus);
    if (std::find(ids.begin(), ids.end(), *label) == ids.end()) return 0;
    *found = userdata;
    return 1;
}

int find_gateway(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
                 sd_bus_error* /*error*/) {
    return exists<&Impl::gateway_names>(bus, path, kGatewayPrefix, userdata, found);
}

int find_agent(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
               sd_bus_error* /*error*/) {
    return exists<&Impl::agent_ids>(bus, path, kAgentPrefix, userdata, found);
}

int find_approval(sd_bus* bus, const char* path, const char* /*interface*/, void* userdata, void** found,
                  sd_bus_error* /*error*/) {
    return exists<&Impl::approval_ids>(bus, path, kApprovalPrefix, userdata, found);
}

int enumerate(const std::vector<std::string>& labels, const char* prefix, char*** nodes) {
    auto** out = static_cast<char**>(std::calloc(labels.size() + 1, sizeof(char*)));
    if (out == nullptr) return -ENOMEM;
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (sd_bus_path_encode(prefix, labels[i].c_str(), &out[i]) < 0) {
            for (std::size_t k = 0; k < i; ++k) std::free(out[k]);
            std::free(static_cast<void*>(out));
            return -ENOMEM;
        }
    }
    *nodes = out;
    return 0;
}

int enumerate_gateways(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(impl_of(userdata).gateway_names(bus), kGatewayPrefix, nodes);
}

int enumerate_agents(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(impl_of(userdata).agent_ids(bus), kAgentPrefix, nodes);
}

int enumerate_approvals(sd_bus* bus, const char* /*prefix*/, void* userdata, char*** nodes, sd_bus_error* /*error*/) {
    return enumerate(impl_of(userdata).approval_ids(bus), kApprovalPrefix, nodes);
}

// A property of a sub-object: `read` gives its document (from Control for a
// caller, from the caches for the daemon's own emissions), `append` its value.
int sub_property(sd_bus* bus, const char* path, const char* prefix, void* userdata, sd_bus_error* error,
                 const std::function<json(Impl&, const std::string&)>& own,
                 const std::function<json(Impl&, const Caller&, const std::string&)>& read,
                 const std::function<int(const json&)>& append) {
    auto& impl = impl_of(userdata);
    const auto label = decode(path, prefix);
    if (!label) return -ENOENT;
    if (Impl::own_emission(bus)) return append(own(impl, *label));
    const auto caller = impl.current_caller(bus, error);
    if (!caller) return -EACCES;
    return Impl::guarded_body(error, [&] { return append(read(impl, *caller, *label)); });
}

int gateway_property(sd_bus* bus, const char* path, const char* /*interface*/, const char* property,
                     sd_bus_message* reply, void* userdata, sd_bus_error* error) {
    const std::string_view name(property);
    const auto own = [](Impl& impl, const std::string& label) {
        const auto config = impl.sources.config->snapshot();
        const auto* gateway = config->gateway(label);
        if (gateway == nullptr) return json::object();
        json connectors = json::array();
        for (const auto& connector : gateway->connectors) connectors.push_back({{"name", connector.name}});
        return json{{"name", gateway->name},
                    {"enforcement", policy::to_string(gateway->enforcement)},
                    {"connectors", connectors}};
    };
    const auto read = [](Impl& impl, const Caller& caller, const std::string& label) {
        return control::to_json(impl.control.gateway(caller, label));
    };
    return sub_property(bus, path, kGatewayPrefix, userdata, error, own, read, [&](const json& gateway) {
        if (name == "Name") return sd_bus_message_append(reply, "s", valid_utf8(text_of(gateway, "name")).c_str());
        if (name == "EnforcementLevel") {
            return sd_bus_message_append(reply, "s", valid_utf8(text_of(gateway, "enforcement")).c_str());
        }
        std::vector<std::string> connectors;
        for (const auto& connector : gateway.value("connectors", json::array())) {
            connectors.push_back(connector.is_object()   ? text_of(connector, "name")
                                 : connector.is_string() ? connector.get<std::string>()
                                                         : "");
        }
        return append_strings(reply, connectors);
    });
}

int agent_property(sd_bus* bus, const char* path, const char* /*interface*/, const char* property,
                   sd_bus_message* reply, void* userdata, sd_bus_error* error) {
    const std::string_view name(property);
    const auto own = [](Impl& impl, const std::string& label) {
        const auto found = impl.agents.find(label);
        return found == impl.agents.end() ? json::object() : found->second;
    };
    const auto read = [](Impl& impl, const Caller& caller, const std::string& label) {
        return control::to_json(impl.control.agent(caller, label));
    };
    return sub_property(bus, path, kAgentPrefix, userdata, error, own, read, [&](const json& agent) {
        if (name == "Uid") return sd_bus_message_append(reply, "u", number_of<std::uint32_t>(agent, "uid"));
        if (name == "Pid") return sd_bus_message_append(reply, "u", number_of<std::uint32_t>(agent, "pid"));
        const char* key = name == "Id" ? "id" : name == "Gateway" ? "gateway" : "isolation";
        return sd_bus_message_append(reply, "s", valid_utf8(text_of(agent, key)).c_str());
    });
}

int approval_property(sd_bus* bus, const char* path, const char* /*interface*/, const char* property,
                      sd_bus_message* reply, void* userdata, sd_bus_error* error) {
    const std::string_view name(property);
    const auto own = [](Impl& impl, const std::string& label) {
        const auto found = impl.approvals.find(label);
        return found == impl.approvals.end() ? json::object() : found->second;
    };
    const auto read = [](Impl& impl, const Caller& caller, const std::string& label) {
        return control::to_json(impl.control.approval(caller, label));
    };
    return sub_property(bus, path, kApprovalPrefix, userdata, error, own, read, [&](const json& approval) {
        if (name == "AgeSeconds") {
            return sd_bus_message_append(reply, "t", number_of<std::uint64_t>(approval, "age_seconds"));
        }
        if (name == "Parameters") {
            return sd_bus_message_append(reply, "s", dump(approval.value("parameters", json::object())).c_str());
        }
        const char* key = name == "Id"        ? "id"
                          : name == "Gateway" ? "gateway"
                          : name == "Agent"   ? "agent"
                          : name == "Action"  ? "action"
                                              : "risk";
        return sd_bus_message_append(reply, "s", valid_utf8(text_of(approval, key)).c_str());
    });
}

// A method of a sub-object: the label is the object's.
// Every method of a sub-object changes state.
template <int (*Body)(Impl&, sd_bus_message*, Identity&, const std::string&)>
int sub_method(sd_bus_message* message, void* userdata, sd_bus_error* error, const char* prefix) {
    auto& impl = impl_of(userdata);
    const auto label = decode(sd_bus_message_get_path(message), prefix);
    if (!label) return sd_bus_error_set(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "no such object");
    return impl.guarded(message, error, Effect::change,
                        [&](Identity& identity) { return Body(impl, message, identity, *label); });
}

int gateway_set_enforcement(Impl& impl, sd_bus_message* m, Identity& id, const std::string& gateway) {
    const char* level = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &level); r < 0) return r;
    impl.control.set_enforcement(id.caller, gateway, level);
    return reply_empty(m);
}

int agent_stop(Impl& impl, sd_bus_message* m, Identity& id, const std::string& agent) {
    impl.control.stop_agent(id.caller, agent);
    return reply_empty(m);
}

int approval_answer(Impl& impl, sd_bus_message* m, Identity& id, const std::string& approval, bool approve) {
    const char* note = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &note); r < 0) return r;
    impl.control.answer(id.caller, approval, approve, note);
    return reply_empty(m);
}

int approval_approve(Impl& impl, sd_bus_message* m, Identity& id, const std::string& approval) {
    return approval_answer(impl, m, id, approval, true);
}

int approval_deny(Impl& impl, sd_bus_message* m, Identity& id, const std::string& approval) {
    return approval_answer(impl, m, id, approval, false);
}

int gateway_set_enforcement_method(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return sub_method<gateway_set_enforcement>(m, userdata, error, kGatewayPrefix);
}
int agent_stop_method(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return sub_method<agent_stop>(m, userdata, error, kAgentPrefix);
}
int approval_approve_method(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return sub_method<approval_approve>(m, userdata, error, kApprovalPrefix);
}
int approval_deny_method(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return sub_method<approval_deny>(m, userdata, error, kApprovalPrefix);
}

// ---------------------------------------------------------------------------
// Vtables. Every method is marked unprivileged for sd-bus, whose own check
// would demand CAP_SYS_ADMIN: the daemon authorizes each call itself.

constexpr auto kCall = SD_BUS_VTABLE_UNPRIVILEGED;
constexpr auto kChanges = SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE;
constexpr auto kConst = SD_BUS_VTABLE_PROPERTY_CONST;

const sd_bus_vtable kMainVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Version", "s", main_property, 0, kConst),
    SD_BUS_PROPERTY("KillSwitch", "b", main_property, 0, kChanges),
    SD_BUS_PROPERTY("KillSwitchScope", "as", main_property, 0, kChanges),
    SD_BUS_PROPERTY("PendingApprovals", "u", main_property, 0, kChanges),
    SD_BUS_PROPERTY("Agents", "u", main_property, 0, kChanges),
    SD_BUS_METHOD_WITH_NAMES("GetStatus", "", "", "s", SD_BUS_PARAM(status_json), reads<get_status>, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListGateways", "", "", "s", SD_BUS_PARAM(gateways_json), reads<list_gateways>, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetGateway", "s", SD_BUS_PARAM(name), "s", SD_BUS_PARAM(gateway_json), reads<get_gateway>,
                             kCall),
    SD_BUS_METHOD_WITH_NAMES("SetEnforcement", "ss", SD_BUS_PARAM(gateway) SD_BUS_PARAM(level), "", "",
                             changes<set_enforcement>, kCall),
    SD_BUS_METHOD_WITH_NAMES("Reload", "", "", "", "", changes<reload>, kCall),
    SD_BUS_METHOD_WITH_NAMES("CheckConfig", "", "", "s", SD_BUS_PARAM(result_json), reads<check_config>, kCall),
    SD_BUS_METHOD_WITH_NAMES("TestRequest", "s", SD_BUS_PARAM(request_json), "s", SD_BUS_PARAM(decision_json),
                             reads<test_request>, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListAgents", "", "", "a(ssuus)", SD_BUS_PARAM(agents), reads<list_agents>, kCall),
    SD_BUS_METHOD_WITH_NAMES("StopAgent", "s", SD_BUS_PARAM(id), "", "", changes<stop_agent>, kCall),
    SD_BUS_METHOD_WITH_NAMES("Launch", "sssasashhhh",
                             SD_BUS_PARAM(gateway) SD_BUS_PARAM(name) SD_BUS_PARAM(isolation) SD_BUS_PARAM(argv)
                                 SD_BUS_PARAM(env) SD_BUS_PARAM(stdin) SD_BUS_PARAM(stdout) SD_BUS_PARAM(stderr)
                                     SD_BUS_PARAM(cwd),
                             "s", SD_BUS_PARAM(agent_id), changes<launch>, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListApprovals", "", "", "a(sssssst)", SD_BUS_PARAM(approvals), reads<list_approvals>,
                             kCall),
    SD_BUS_METHOD_WITH_NAMES("Approve", "ss", SD_BUS_PARAM(id) SD_BUS_PARAM(note), "", "", changes<approve>, kCall),
    SD_BUS_METHOD_WITH_NAMES("Deny", "ss", SD_BUS_PARAM(id) SD_BUS_PARAM(note), "", "", changes<deny>, kCall),
    SD_BUS_METHOD_WITH_NAMES("SetKillSwitch", "bss", SD_BUS_PARAM(active) SD_BUS_PARAM(scope) SD_BUS_PARAM(reason), "",
                             "", changes<set_kill_switch>, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetKillSwitch", "", "", "s", SD_BUS_PARAM(kill_switch_json), reads<get_kill_switch>,
                             kCall),
    SD_BUS_METHOD_WITH_NAMES("QueryTraffic", "a{ss}", SD_BUS_PARAM(filters), "s", SD_BUS_PARAM(rows_jsonl),
                             reads<query_traffic>, kCall),
    SD_BUS_METHOD_WITH_NAMES("QueryAudit", "a{ss}", SD_BUS_PARAM(filters), "s", SD_BUS_PARAM(records_jsonl),
                             reads<query_audit>, kCall),
    SD_BUS_METHOD_WITH_NAMES("VerifyAudit", "", "", "s", SD_BUS_PARAM(report_json), reads<verify_audit>, kCall),
    SD_BUS_METHOD_WITH_NAMES("ListSecrets", "", "", "s", SD_BUS_PARAM(secrets_json), reads<list_secrets>, kCall),
    SD_BUS_METHOD_WITH_NAMES("SetSecret", "sss", SD_BUS_PARAM(name) SD_BUS_PARAM(connector) SD_BUS_PARAM(value), "", "",
                             changes<set_secret>, kCall),
    SD_BUS_METHOD_WITH_NAMES("RemoveSecret", "s", SD_BUS_PARAM(name), "", "", changes<remove_secret>, kCall),
    SD_BUS_METHOD_WITH_NAMES("RotateVaultKey", "", "", "u", SD_BUS_PARAM(count), changes<rotate_vault_key>, kCall),
    SD_BUS_METHOD_WITH_NAMES("GetMetrics", "", "", "s", SD_BUS_PARAM(metrics_text), reads<get_metrics>, kCall),
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
    SD_BUS_PROPERTY("Name", "s", gateway_property, 0, kConst),
    SD_BUS_PROPERTY("EnforcementLevel", "s", gateway_property, 0, kChanges),
    SD_BUS_PROPERTY("Connectors", "as", gateway_property, 0, kChanges),
    SD_BUS_METHOD_WITH_NAMES("SetEnforcement", "s", SD_BUS_PARAM(level), "", "", gateway_set_enforcement_method, kCall),
    SD_BUS_VTABLE_END,
};

const sd_bus_vtable kAgentVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Id", "s", agent_property, 0, kConst),
    SD_BUS_PROPERTY("Gateway", "s", agent_property, 0, kConst),
    SD_BUS_PROPERTY("Uid", "u", agent_property, 0, kConst),
    SD_BUS_PROPERTY("Pid", "u", agent_property, 0, kConst),
    SD_BUS_PROPERTY("Isolation", "s", agent_property, 0, kConst),
    SD_BUS_METHOD_WITH_NAMES("Stop", "", "", "", "", agent_stop_method, kCall),
    // Sent to the connection that launched the agent only.
    SD_BUS_SIGNAL_WITH_NAMES("Exited", "i", SD_BUS_PARAM(status), 0),
    SD_BUS_VTABLE_END,
};

const sd_bus_vtable kApprovalVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Id", "s", approval_property, 0, kConst),
    SD_BUS_PROPERTY("Gateway", "s", approval_property, 0, kConst),
    SD_BUS_PROPERTY("Agent", "s", approval_property, 0, kConst),
    SD_BUS_PROPERTY("Action", "s", approval_property, 0, kConst),
    SD_BUS_PROPERTY("Risk", "s", approval_property, 0, kConst),
    SD_BUS_PROPERTY("Parameters", "s", approval_property, 0, kConst),
    // Grows by itself; read it when needed.
    SD_BUS_PROPERTY("AgeSeconds", "t", approval_property, 0, 0),
    SD_BUS_METHOD_WITH_NAMES("Approve", "s", SD_BUS_PARAM(note), "", "", approval_approve_method, kCall),
    SD_BUS_METHOD_WITH_NAMES("Deny", "s", SD_BUS_PARAM(note), "", "", approval_deny_method, kCall),
    SD_BUS_VTABLE_END,
};

}  // namespace tameflare::dbus::bus_detail
