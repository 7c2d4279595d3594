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
                emit(front.sync_gateways());
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

void BusService::Impl::emit(const std::vector<Emission>& emissions) {
    for (const auto& emission : emissions) {
        if (!bus) return;
        switch (emission.kind) {
            case Emission::Kind::signal: {
                sd_bus_message* raw = nullptr;
                int r = sd_bus_message_new_signal(bus.get(), &raw, emission.path.c_str(), emission.interface.c_str(),
                                                  emission.member.c_str());
                const MessagePtr signal(raw);
                if (r >= 0 && !emission.destination.empty()) {
                    r = sd_bus_message_set_destination(signal.get(), emission.destination.c_str());
                }
                for (const auto& value : emission.args) {
                    if (r >= 0) r = append_value(signal.get(), value);
                }
                if (r >= 0) r = sd_bus_send(bus.get(), signal.get(), nullptr);
                emitted(r, emission.member);
                break;
            }
            case Emission::Kind::added:
                emitted(sd_bus_emit_object_added(bus.get(), emission.path.c_str()), "InterfacesAdded");
                break;
            case Emission::Kind::removed:
                emitted(sd_bus_emit_object_removed(bus.get(), emission.path.c_str()), "InterfacesRemoved");
                break;
            case Emission::Kind::changed: {
                std::vector<char*> names;
                names.reserve(emission.properties.size() + 1);
                for (const auto& name : emission.properties) names.push_back(const_cast<char*>(name.c_str()));
                names.push_back(nullptr);
                emitted(sd_bus_emit_properties_changed_strv(bus.get(), emission.path.c_str(),
                                                            emission.interface.c_str(), names.data()),
                        "PropertiesChanged");
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------

BusService::BusService(BusOptions options, control::Control& control, BusSources sources)
    : impl_((sources.config == nullptr || sources.approvals == nullptr)
                ? throw std::invalid_argument("BusService needs the configuration and the approval queue")
                : std::make_unique<Impl>(std::move(options), control, sources)) {
    if (!impl_->wake) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    // Subscribed before the caches are filled: an event in between is
    // queued and applied again, which is harmless.
    impl_->subscription =
        control.events().subscribe([impl = impl_.get()](const control::Event& event) { impl->enqueue(event); });
    impl_->subscribed = true;
    try {
        impl_->front.load();
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
        impl_->front.control().events().unsubscribe(impl_->subscription);
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
