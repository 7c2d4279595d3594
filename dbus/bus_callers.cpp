#include "dbus/bus_internal.h"

namespace tameflare::dbus {

// ---------------------------------------------------------------------------
// Who calls: the process behind a connection, without pid races.
//
// The bus records a connection's pid when it connects. A process that
// connects, hands the connection on (fork, SCM_RIGHTS) and exits frees its
// pid for another process; reading /proc/PID then would judge the caller by
// the other process's groups and cgroup. So the daemon holds a pidfd of the
// process that opened the connection: the bus's own (ProcessFD), or one it
// opens itself as the connection's name appears. A call that changes state
// is answered only while that process lives; reads keep the pid's current
// process (docs/dbus.md, "How the daemon knows who calls").

void BusService::Impl::start_tracking() {
    peers.clear();
    peers_limit = max_peers();
    peers_full_logged = false;
    const char* own = nullptr;
    BusCredentials mine;
    BusError lookup;
    if (sd_bus_get_unique_name(bus.get(), &own) >= 0 &&
        connection_credentials(bus.get(), own, mine, &lookup.error) >= 0 && mine.pidfd) {
        tracking = Tracking::bus_pidfd;
        log(LogLevel::info, "D-Bus callers are identified by the pidfd the bus gives (ProcessFD)",
            {{"DBUS_CALLER_IDENTITY", to_string(tracking)}});
        return;
    }
    tracking = Tracking::tracked;
    // AddMatch is answered before sd_bus_match_signal returns: every name
    // that appears from here on is seen; the others are older than `tracking_since`.
    sd_bus_slot* slot = nullptr;
    const int r = sd_bus_match_signal(bus.get(), &slot, kBusService, kBusPath, kBusInterface, "NameOwnerChanged",
                                      name_owner_changed, this);
    if (r < 0) {
        disconnect();
        throw std::runtime_error("cannot watch connections appear on the bus (AddMatch for NameOwnerChanged): " +
                                 errno_text(r) + "; the bus policy must let root add matches");
    }
    slots.emplace_back(slot);
    tracking_since = boottime_ticks();
    log(LogLevel::info,
        "D-Bus callers are identified by pidfds the daemon opens as their connections appear "
        "(the bus gives no ProcessFD; dbus-daemon 1.15.x or dbus-broker would)",
        {{"DBUS_CALLER_IDENTITY", to_string(tracking)}});
}

void BusService::Impl::track(const char* name) {
    // A unique name appears once in a bus's life: never take a second look.
    if (peers.find(std::string_view(name)) != peers.end()) return;
    if (peers.size() >= peers_limit) {
        if (!std::exchange(peers_full_logged, true)) {
            log(LogLevel::warning,
                "more D-Bus connections than tameflared remembers; calls that change state from the newest "
                "are refused until some disconnect",
                {{"LIMIT", std::to_string(peers_limit)},
                 {"HINT",
                  "raise the daemon's descriptor limit (LimitNOFILE=, a quarter is for this), lower "
                  "the bus's max_completed_connections, or find who opens so many"}});
        }
        return;
    }
    Peer peer;
    BusError lookup;
    pid_t pid = 0;
    // Gone already (NameHasNoOwner): its NameOwnerChanged that says so follows and forgets it.
    if (connection_pid(bus.get(), name, pid, &lookup.error) >= 0 && pid > 0) {
        peer.pid = pid;
        peer.pidfd = open_pidfd(pid);
        if (!peer.pidfd) peer.open_error = errno;
    }
    peers.emplace(name, std::move(peer));
    peers_full_logged = false;
}

Discontinuity BusService::Impl::continuity(const char* sender, pid_t pid, BusCredentials& given,
                                           UniqueFd& pidfd) const {
    const std::string number = std::to_string(pid);
    const std::string replaced = ", so pid " + number + " may belong to another process now";
    if (tracking == Tracking::bus_pidfd) {
        if (!given.pidfd) return {"no_bus_pidfd", "the bus gave no pidfd (ProcessFD) of the process that opened it"};
        const auto of = pidfd_pid(given.pidfd.get());
        if ((of && *of < 0) || !alive(given.pidfd.get())) {
            return {"exited", "the process that opened this connection (pid " + number + ") has exited" + replaced};
        }
        if (!of || *of != pid) {
            return {"pid_mismatch", "the bus's pidfd is not of pid " + number + ", the connection's pid"};
        }
        pidfd = std::move(given.pidfd);
        return {};
    }
    const auto found = peers.find(std::string_view(sender));
    if (found != peers.end()) {
        const Peer& peer = found->second;
        if (peer.pid == 0) {
            return {"unknown", "the bus did not tell tameflared which process opened this connection when it appeared"};
        }
        if (peer.pid != pid) {
            return {"pid_mismatch", "the bus now gives pid " + number + ", not pid " + std::to_string(peer.pid) +
                                        " that it gave when the connection appeared"};
        }
        if (!peer.pidfd && peer.open_error != ESRCH) {
            return {"no_pidfd", "tameflared could not open a pidfd of the process that opened this connection (pid " +
                                    number + ") when it appeared: " + std::strerror(peer.open_error)};
        }
        if (!peer.pidfd) {
            return {"exited_before_seen", "the process that opened this connection (pid " + number +
                                              ") had exited before the connection said Hello" + replaced};
        }
        if (!alive(peer.pidfd.get())) {
            return {"exited", "the process that opened this connection (pid " + number + ") has exited" + replaced};
        }
        pidfd = UniqueFd(::fcntl(peer.pidfd.get(), F_DUPFD_CLOEXEC, 3));
        if (!pidfd)
            return {"no_descriptor", std::string("tameflared cannot copy a descriptor: ") + std::strerror(errno)};
        return {};
    }
    // Not seen appearing: older than the daemon's watch (or past kMaxPeers).
    // Its process started before the connection appeared, so before
    // `tracking_since`; a process that started later is not its owner.
    pidfd = open_pidfd(pid);
    std::optional<std::uint64_t> started;
    if (pidfd) started = start_ticks(pid);
    if (!started || !alive(pidfd.get())) {
        pidfd.reset();
        return {"exited", "the process that opened this connection (pid " + number + ") has exited" + replaced};
    }
    if (*started >= tracking_since) {
        pidfd.reset();
        return {"started_after", "this connection is older than tameflared's watch on the bus, but pid " + number +
                                     " is a process that started after it, so not the one that opened the connection"};
    }
    return {};
}

std::optional<Identity> BusService::Impl::identify(sd_bus_message* message, sd_bus_error* error, Effect effect) {
    if (message == nullptr) {
        access_denied(error, "no message to identify the caller by");
        return std::nullopt;
    }
    const char* sender = sd_bus_message_get_sender(message);
    const char* member = sd_bus_message_get_member(message);
    const std::string method = member != nullptr ? member : "";
    if (sender == nullptr) {
        access_denied(error, "the message names no sender to identify the caller by");
        return std::nullopt;
    }
    // The pid first, then the pidfd of the process that opened the
    // connection, then everything read from /proc: a live pidfd afterwards
    // proves those reads were of this process and not of a later one that
    // got its number.
    pid_t pid = 0;
    BusCredentials given;
    if (tracking == Tracking::bus_pidfd) {
        BusError lookup;
        if (connection_credentials(bus.get(), sender, given, &lookup.error) < 0) given.pid = 0;
        pid = given.pid;
    } else {
        sd_bus_creds* raw = nullptr;
        const int r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_PID, &raw);
        const CredsPtr first(raw);
        if (r < 0 || sd_bus_creds_get_pid(first.get(), &pid) < 0) pid = 0;
    }
    if (pid <= 0) {
        access_denied(error, "the bus did not tell the caller's process");
        return std::nullopt;
    }
    UniqueFd pidfd;
    const auto broken = continuity(sender, pid, given, pidfd);
    if (!broken.empty()) {
        if (effect == Effect::change) {
            log(LogLevel::warning,
                "D-Bus call refused: the caller's process may not be the one that opened its connection",
                {{"DBUS_SENDER", sender},
                 {"DBUS_METHOD", method},
                 {"CALLER_PID", std::to_string(pid)},
                 {"REASON", broken.code},
                 {"DBUS_CALLER_IDENTITY", to_string(tracking)}});
            access_denied(error, "tameflared refuses " + method + " from " + sender + ": " + broken.text +
                                     ". A call that changes state needs the process that opened the connection "
                                     "(hint: reconnect: make the call on a new bus connection, opened by the "
                                     "process that calls; read-only calls are still answered)");
            return std::nullopt;
        }
        // Reads keep the call-time look-up: the process that has the pid now.
        pidfd = open_pidfd(pid);
    }
    if (!pidfd) {
        access_denied(error, "the caller's process is gone");
        return std::nullopt;
    }
    sd_bus_creds* raw = nullptr;
    const int r = sd_bus_query_sender_creds(message, kCredsMask, &raw);
    const CredsPtr creds(raw);
    pid_t again = 0;
    uid_t euid = 0;
    gid_t egid = 0;
    const gid_t* groups = nullptr;
    int count = -1;
    if (r < 0 || sd_bus_creds_get_pid(creds.get(), &again) < 0 || again != pid ||
        sd_bus_creds_get_euid(creds.get(), &euid) < 0 || sd_bus_creds_get_egid(creds.get(), &egid) < 0 ||
        (count = sd_bus_creds_get_supplementary_gids(creds.get(), &groups)) < 0) {
        access_denied(error, "the bus did not tell the caller's user and groups");
        return std::nullopt;
    }
    Identity identity;
    identity.caller.pid = pid;
    identity.caller.uid = euid;
    identity.caller.gid = egid;
    if (count > 0) identity.caller.groups.assign(groups, groups + count);
    identity.caller.via = "dbus";
    identity.caller.method = method;
    // "" counts as an agent: a caller that exited meanwhile is refused.
    identity.caller.cgroup = netns::process_cgroup(pid, pidfd.get());
    identity.pidfd = std::move(pidfd);
    return identity;
}

}  // namespace tameflare::dbus
