// The D-Bus front end's insides, shared by its files and by nothing else
// (dbus/bus_service.h is the interface): bus_service.cpp (the connection,
// the loop, signals and objects that follow the daemon's events),
// bus_callers.cpp (who calls: the process behind a connection, without pid
// races), bus_methods.cpp (marshalling, the method and property handlers,
// sub-objects and the vtables); the helpers in bus_support.h. What calls
// and events mean is bus_front.h's, which has no sd-bus call.
#pragma once

#include "dbus/bus_support.h"

namespace tameflare::dbus {

// This header is for the D-Bus front end's own files only.
using namespace bus_detail;  // NOLINT(google-build-using-namespace)

struct BusService::Impl {
    BusOptions options;
    BusFront front;
    UniqueFd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};

    // The connection and its registrations; only the bus thread touches
    // them once it runs (sd-bus is not thread-safe).
    BusPtr bus;
    std::vector<SlotPtr> slots;
    mutable std::mutex name_mutex;
    std::string unique;  // under name_mutex

    std::thread thread;
    std::atomic<bool> stopping{false};
    std::uint64_t subscription = 0;
    bool subscribed = false;

    // Events from any thread, emitted on the bus thread.
    std::mutex queue_mutex;
    std::deque<control::Event> queue;  // under queue_mutex
    std::size_t dropped = 0;           // under queue_mutex

    // One identification per incoming message: a GetAll reads every
    // property with the same caller.
    MessagePtr identified_message;
    std::optional<Caller> identified;

    // How callers' processes are known (decided per bus connection), and in
    // Tracking::tracked the process that opened each connection, by unique
    // name, from the moment the name appeared.
    Tracking tracking = Tracking::tracked;
    std::map<std::string, Peer, std::less<>> peers;
    // When the daemon began to see names appear (start_ticks' clock): a
    // connection it did not see appear is older, and so is its process.
    std::uint64_t tracking_since = 0;
    std::size_t peers_limit = kMaxPeers;
    bool peers_full_logged = false;

    Impl(BusOptions bus_options, control::Control& control_plane, BusSources bus_sources)
        : options(std::move(bus_options)), front(control_plane, bus_sources) {}

    // ---------------------------------------------------------------------
    // Connection

    void connect();
    void disconnect() {
        identified_message.reset();
        identified.reset();
        peers.clear();
        slots.clear();
        bus.reset();
        std::lock_guard lock(name_mutex);
        unique.clear();
    }

    void run();
    void wait_for(int fd, short events, int timeout_ms) const {
        pollfd fds[2] = {{wake.get(), POLLIN, 0}, {fd, events, 0}};
        if (::poll(fds, fd >= 0 ? 2 : 1, timeout_ms) > 0 && (fds[0].revents & POLLIN) != 0) {
            std::uint64_t value = 0;
            (void)!::read(wake.get(), &value, sizeof value);
        }
    }
    void notify() const {
        const std::uint64_t one = 1;
        (void)!::write(wake.get(), &one, sizeof one);
    }

    // ---------------------------------------------------------------------
    // Events

    void enqueue(const control::Event& event) {
        {
            std::lock_guard lock(queue_mutex);
            if (queue.size() >= kMaxQueuedEvents) {
                ++dropped;
                return;
            }
            queue.push_back(event);
        }
        notify();
    }

    void drain() {
        std::deque<control::Event> batch;
        std::size_t lost = 0;
        {
            std::lock_guard lock(queue_mutex);
            batch.swap(queue);
            lost = std::exchange(dropped, 0);
        }
        if (lost != 0) {
            log(LogLevel::warning,
                std::to_string(lost) + " control events were not sent as D-Bus signals (the bus was stuck)");
        }
        for (const auto& event : batch) {
            try {
                handle(event);
            } catch (const std::exception& error) {
                log(LogLevel::warning, std::string("D-Bus signal not sent: ") + error.what(), {{"EVENT", event.type}});
            }
        }
    }

    void emitted(int r, std::string_view what) const {
        if (r < 0) {
            log(LogLevel::warning, "D-Bus signal not sent: " + errno_text(r), {{"SIGNAL", what}});
        }
    }

    void handle(const control::Event& event) { emit(front.apply(event)); }
    // Sends what BusFront decided, when connected.
    void emit(const std::vector<Emission>& emissions);

    // ---------------------------------------------------------------------
    // Who calls

    // Decides how callers are identified on this connection and, without a
    // ProcessFD from the bus, starts remembering connections as they appear.
    void start_tracking();
    // A unique name appeared (NameOwnerChanged): remember its process now.
    void track(const char* name);
    void forget(std::string_view name) {
        if (const auto found = peers.find(name); found != peers.end()) peers.erase(found);
    }
    // Whether `pid`, the bus's pid of `sender`, is still the process that
    // opened the connection; sets `pidfd` to that process when it is.
    Discontinuity continuity(const char* sender, pid_t pid, BusCredentials& given, UniqueFd& pidfd) const;
    // The caller of `message`; nullopt with `error` set when it cannot be
    // known, or when a call that changes state comes from a connection whose
    // process may have been replaced.
    std::optional<Identity> identify(sd_bus_message* message, sd_bus_error* error, Effect effect);

    // ---------------------------------------------------------------------
    // Calls

    // Runs `body` for an authorized caller; errors become D-Bus errors.
    int guarded(sd_bus_message* message, sd_bus_error* error, Effect effect,
                const std::function<int(Identity&)>& body) {
        auto identity = identify(message, error, effect);
        if (!identity) return -EACCES;
        return guarded_body(error, [&] { return body(*identity); });
    }

    static int guarded_body(sd_bus_error* error, const std::function<int()>& body) {
        try {
            return body();
        } catch (const std::bad_alloc&) {
            return -ENOMEM;
        } catch (const std::exception& failure) {
            if (dynamic_cast<const ControlError*>(&failure) == nullptr) {
                log(LogLevel::error, std::string("D-Bus call failed: ") + failure.what());
            }
            const auto named = failure_of(failure);
            return sd_bus_error_set(error, named.name.c_str(), valid_utf8(named.message).c_str());
        }
    }

    // The caller of the message being dispatched; nullopt (with `error`
    // set) when it cannot be known.
    std::optional<Caller> current_caller(sd_bus* connection, sd_bus_error* error) {
        sd_bus_message* message = sd_bus_get_current_message(connection);
        if (message != nullptr && identified_message.get() == message && identified) return identified;
        // Properties are all read-only.
        auto identity = identify(message, error, Effect::read);
        if (!identity) return std::nullopt;
        identified_message.reset(sd_bus_message_ref(message));
        identified = identity->caller;
        return identified;
    }

    // No message being dispatched: the daemon's own emission reads its caches.
    static bool own_emission(sd_bus* connection) { return sd_bus_get_current_message(connection) == nullptr; }
};

namespace bus_detail {

// bus_methods.cpp: what the connection registers.
extern const sd_bus_vtable kMainVtable[];
extern const sd_bus_vtable kGatewayVtable[];
extern const sd_bus_vtable kAgentVtable[];
extern const sd_bus_vtable kApprovalVtable[];
int name_owner_changed(sd_bus_message* message, void* userdata, sd_bus_error* error);
// A message's arguments as the seam's values; the value appended to a message.
int read_arguments(sd_bus_message* message, std::vector<BusValue>& out);
int append_value(sd_bus_message* message, const BusValue& value);
int find_gateway(sd_bus* bus, const char* path, const char* interface, void* userdata, void** found,
                 sd_bus_error* error);
int find_agent(sd_bus* bus, const char* path, const char* interface, void* userdata, void** found, sd_bus_error* error);
int find_approval(sd_bus* bus, const char* path, const char* interface, void* userdata, void** found,
                  sd_bus_error* error);
int enumerate_gateways(sd_bus* bus, const char* prefix, void* userdata, char*** nodes, sd_bus_error* error);
int enumerate_agents(sd_bus* bus, const char* prefix, void* userdata, char*** nodes, sd_bus_error* error);
int enumerate_approvals(sd_bus* bus, const char* prefix, void* userdata, char*** nodes, sd_bus_error* error);

}  // namespace bus_detail

}  // namespace tameflare::dbus
