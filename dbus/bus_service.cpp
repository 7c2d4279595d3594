#include "dbus/bus_internal.h"

namespace tameflare::dbus {

// ---------------------------------------------------------------------------
// Connection and loop

void BusService::Impl::connect() {
    sd_bus* raw = nullptr;
    int r = 0;
    if (!options.address.empty()) {
        r = sd_bus_new(&raw);
        bus.reset(raw);
        if (r >= 0) r = sd_bus_set_address(bus.get(), options.address.c_str());
        if (r >= 0) r = sd_bus_set_bus_client(bus.get(), 1);
        if (r >= 0) r = sd_bus_negotiate_fds(bus.get(), 1);
        if (r >= 0) r = sd_bus_start(bus.get());
    } else if (options.bus == "session") {
        r = sd_bus_open_user(&raw);
        bus.reset(raw);
    } else {
        r = sd_bus_open_system(&raw);
        bus.reset(raw);
    }
    const std::string where = options.address.empty() ? "the " + options.bus + " bus" : options.address;
    if (r < 0) {
        disconnect();
        throw std::runtime_error("cannot connect to " + where + ": " + errno_text(r));
    }
    (void)sd_bus_set_description(bus.get(), "tameflared");
    // Before anything can be called: the fewer connections predate the watch, the better.
    start_tracking();
    const auto add = [&](int result, sd_bus_slot* slot, const char* what) {
        if (result < 0) {
            disconnect();
            throw std::runtime_error(std::string("cannot register ") + what + " on the bus: " + errno_text(result));
        }
        slots.emplace_back(slot);
    };
    sd_bus_slot* slot = nullptr;
    add(sd_bus_add_object_vtable(bus.get(), &slot, kObjectPath, kInterface, kMainVtable, this), slot, kObjectPath);
    slot = nullptr;
    add(sd_bus_add_object_manager(bus.get(), &slot, kObjectPath), slot, "the object manager");
    const struct {
        const char* prefix;
        const char* interface;
        const sd_bus_vtable* vtable;
        sd_bus_object_find_t find;
        sd_bus_node_enumerator_t enumerate;
    } children[] = {
        {kGatewayPrefix, kGatewayInterface, kGatewayVtable, find_gateway, enumerate_gateways},
        {kAgentPrefix, kAgentInterface, kAgentVtable, find_agent, enumerate_agents},
        {kApprovalPrefix, kApprovalInterface, kApprovalVtable, find_approval, enumerate_approvals},
    };
    for (const auto& child : children) {
        slot = nullptr;
        add(sd_bus_add_fallback_vtable(bus.get(), &slot, child.prefix, child.interface, child.vtable, child.find, this),
            slot, child.prefix);
        slot = nullptr;
        add(sd_bus_add_node_enumerator(bus.get(), &slot, child.prefix, child.enumerate, this), slot, child.prefix);
    }
    r = sd_bus_request_name(bus.get(), options.name.c_str(), 0);
    if (r < 0) {
        disconnect();
        throw std::runtime_error("cannot own the name " + options.name + " on " + where + ": " + errno_text(r) +
                                 (r == -EEXIST ? " (another tameflared holds it)"
                                  : r == -EACCES
                                      ? " (the bus policy com.tameflare.Daemon1.conf is not installed, or the "
                                        "daemon does not run as root)"
                                      : ""));
    }
    const char* name = nullptr;
    std::lock_guard lock(name_mutex);
    unique = sd_bus_get_unique_name(bus.get(), &name) >= 0 && name != nullptr ? name : "";
}

void BusService::Impl::run() {
    auto delay = std::chrono::seconds(1);
    while (!stopping.load()) {
        if (!bus) {
            // The bus went away (dbus-daemon restarted): take the name again
            // when it is back, keeping the caches current meanwhile.
            wait_for(-1, 0, static_cast<int>(std::chrono::milliseconds(delay).count()));
            drain();
            if (stopping.load()) break;
            try {
                connect();
                log(LogLevel::notice, "D-Bus connection restored", {{"BUS_NAME", options.name}});
                delay = std::chrono::seconds(1);
                sync_gateways();
            } catch (const std::exception& error) {
                log(LogLevel::debug, error.what());
                delay = std::min(delay * 2, kMaxReconnectDelay);
            }
            continue;
        }
        int r = 0;
        while ((r = sd_bus_process(bus.get(), nullptr)) > 0) {
            identified_message.reset();
            identified.reset();
        }
        identified_message.reset();
        identified.reset();
        if (r < 0) {
            log(LogLevel::error, "lost the D-Bus connection: " + errno_text(r),
                {{"HINT", "tameflared reconnects when the bus is back; REST is unaffected"}});
            disconnect();
            continue;
        }
        drain();
        const int fd = sd_bus_get_fd(bus.get());
        const int events = sd_bus_get_events(bus.get());
        std::uint64_t until = UINT64_MAX;
        (void)sd_bus_get_timeout(bus.get(), &until);
        int timeout_ms = -1;
        if (until != UINT64_MAX) {
            const auto now = monotonic_usec();
            timeout_ms =
                until <= now ? 0 : static_cast<int>(std::min<std::uint64_t>((until - now + 999) / 1000, 60000));
        }
        if (fd < 0 || events < 0) {
            disconnect();
            continue;
        }
        wait_for(fd, static_cast<short>(events), timeout_ms);
    }
}

void BusService::Impl::handle(const control::Event& event) {
    const auto& data = event.data;
    const std::string id = text_of(data, "id");
    if (event.type == "approval.requested") {
        const std::string path = encode(kApprovalPrefix, id);
        approvals[id] = data;
        if (!bus) return;
        emitted(sd_bus_emit_signal(
                    bus.get(), kObjectPath, kInterface, "ApprovalRequested", "ssssss", valid_utf8(id).c_str(),
                    valid_utf8(text_of(data, "gateway")).c_str(), valid_utf8(text_of(data, "agent")).c_str(),
                    valid_utf8(text_of(data, "action")).c_str(), valid_utf8(text_of(data, "risk")).c_str(),
                    dump(data.value("parameters", json::object())).c_str()),
                "ApprovalRequested");
        emitted(sd_bus_emit_object_added(bus.get(), path.c_str()), "InterfacesAdded");
        properties_changed(kObjectPath, kInterface, {"PendingApprovals"});
    } else if (event.type == "approval.resolved") {
        const std::string path = encode(kApprovalPrefix, id);
        const bool known = approvals.count(id) != 0;
        if (bus) {
            std::string note = text_of(data, "note");
            if (note.empty() && data.value("expired", false)) note = "expired";
            emitted(sd_bus_emit_signal(bus.get(), kObjectPath, kInterface, "ApprovalResolved", "sbss",
                                       valid_utf8(id).c_str(), data.value("approved", false) ? 1 : 0,
                                       valid_utf8(text_of(data, "actor")).c_str(), valid_utf8(note).c_str()),
                    "ApprovalResolved");
            // Removed while still known: the InterfacesRemoved lists its interfaces.
            if (known) emitted(sd_bus_emit_object_removed(bus.get(), path.c_str()), "InterfacesRemoved");
        }
        approvals.erase(id);
        if (known) properties_changed(kObjectPath, kInterface, {"PendingApprovals"});
    } else if (event.type == "kill_switch.changed") {
        kill = data;
        if (!bus) return;
        emitted(sd_bus_emit_signal(bus.get(), kObjectPath, kInterface, "KillSwitchChanged", "bss",
                                   data.value("active", false) ? 1 : 0, valid_utf8(text_of(data, "reason")).c_str(),
                                   valid_utf8(text_of(data, "actor")).c_str()),
                "KillSwitchChanged");
        properties_changed(kObjectPath, kInterface, {"KillSwitch", "KillSwitchScope"});
    } else if (event.type == "agent.started") {
        agents[id] = data;
        if (!bus) return;
        emitted(sd_bus_emit_signal(bus.get(), kObjectPath, kInterface, "AgentStarted", "ssuu", valid_utf8(id).c_str(),
                                   valid_utf8(text_of(data, "gateway")).c_str(), number_of<std::uint32_t>(data, "uid"),
                                   number_of<std::uint32_t>(data, "pid")),
                "AgentStarted");
        emitted(sd_bus_emit_object_added(bus.get(), encode(kAgentPrefix, id).c_str()), "InterfacesAdded");
        properties_changed(kObjectPath, kInterface, {"Agents"});
    } else if (event.type == "agent.exited") {
        const std::string path = encode(kAgentPrefix, id);
        const int status = number_of<int>(data, "status");
        const bool known = agents.count(id) != 0;
        const auto launcher = launchers.find(id);
        if (bus) {
            emitted(sd_bus_emit_signal(bus.get(), kObjectPath, kInterface, "AgentExited", "si", valid_utf8(id).c_str(),
                                       status),
                    "AgentExited");
            // The launcher alone learns the end on the agent's object, which
            // the bus policy lets any user receive (the broadcasts it does not).
            if (launcher != launchers.end()) {
                sd_bus_message* raw = nullptr;
                int r = sd_bus_message_new_signal(bus.get(), &raw, path.c_str(), kAgentInterface, "Exited");
                const MessagePtr signal(raw);
                if (r >= 0) r = sd_bus_message_set_destination(signal.get(), launcher->second.c_str());
                if (r >= 0) r = sd_bus_message_append(signal.get(), "i", status);
                if (r >= 0) r = sd_bus_send(bus.get(), signal.get(), nullptr);
                emitted(r, "Exited");
            }
            if (known) emitted(sd_bus_emit_object_removed(bus.get(), path.c_str()), "InterfacesRemoved");
        }
        if (launcher != launchers.end()) launchers.erase(launcher);
        agents.erase(id);
        if (known) properties_changed(kObjectPath, kInterface, {"Agents"});
    } else if (event.type == "config.reloaded") {
        sync_gateways();
    } else if (event.type == "enforcement.changed") {
        sync_gateways();
        const std::string gateway = text_of(data, "gateway");
        if (gateways.count(gateway) != 0) {
            properties_changed(encode(kGatewayPrefix, gateway).c_str(), kGatewayInterface, {"EnforcementLevel"});
        }
    }
}

// Gateway objects come and go with the configuration.
void BusService::Impl::sync_gateways() {
    std::set<std::string, std::less<>> now;
    for (const auto& [name, gateway] : sources.config->snapshot()->gateways) now.insert(name);
    for (const auto& name : gateways) {
        if (now.count(name) == 0 && bus) {
            emitted(sd_bus_emit_object_removed(bus.get(), encode(kGatewayPrefix, name).c_str()), "InterfacesRemoved");
        }
    }
    const auto before = std::exchange(gateways, now);
    for (const auto& name : now) {
        if (!bus) break;
        const std::string path = encode(kGatewayPrefix, name);
        if (before.count(name) == 0) {
            emitted(sd_bus_emit_object_added(bus.get(), path.c_str()), "InterfacesAdded");
        } else {
            properties_changed(path.c_str(), kGatewayInterface, {"Connectors"});
        }
    }
}

// ---------------------------------------------------------------------------

BusService::BusService(BusOptions options, control::Control& control, BusSources sources)
    : impl_(std::make_unique<Impl>(std::move(options), control, sources)) {
    if (sources.config == nullptr || sources.approvals == nullptr) {
        throw std::invalid_argument("BusService needs the configuration and the approval queue");
    }
    if (!impl_->wake) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    // Subscribed before the caches are filled: an event in between is
    // queued and applied again, which is harmless.
    impl_->subscription =
        control.events().subscribe([impl = impl_.get()](const control::Event& event) { impl->enqueue(event); });
    impl_->subscribed = true;
    try {
        for (const auto& request : sources.approvals->pending())
            impl_->approvals[request.id] = control::to_json(request);
        if (sources.agents != nullptr) {
            for (const auto& agent : sources.agents->list()) {
                impl_->agents[agent.id] = json{{"id", agent.id},
                                               {"gateway", agent.gateway},
                                               {"uid", agent.uid},
                                               {"pid", agent.pid},
                                               {"isolation", agent.isolation}};
            }
        }
        for (const auto& [name, gateway] : sources.config->snapshot()->gateways) impl_->gateways.insert(name);
        impl_->connect();
    } catch (...) {
        control.events().unsubscribe(impl_->subscription);
        impl_->subscribed = false;
        throw;
    }
}

BusService::~BusService() {
    stop();
}

void BusService::start() {
    if (impl_->thread.joinable() || impl_->stopping.load()) return;
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

void BusService::stop() {
    if (impl_->subscribed) {
        impl_->control.events().unsubscribe(impl_->subscription);
        impl_->subscribed = false;
    }
    impl_->stopping.store(true);
    impl_->notify();
    if (impl_->thread.joinable()) impl_->thread.join();
    // Closing the connection releases the name.
    impl_->disconnect();
}

std::string BusService::unique_name() const {
    std::lock_guard lock(impl_->name_mutex);
    return impl_->unique;
}

}  // namespace tameflare::dbus
