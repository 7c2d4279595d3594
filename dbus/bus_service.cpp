#include "dbus/bus_service.h"

#include "common/log.h"
#include "common/unique_fd.h"
#include "daemon/agents.h"
#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/proxy/approvals.h"
#include "daemon/store/query.h"
#include "netns/cgroup.h"
#include "policy/config.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace tameflare::dbus {

using control::ControlError;
using control::Role;
using nlohmann::json;

namespace {

constexpr const char* kGatewayPrefix = "/com/tameflare/Daemon1/gateway";
constexpr const char* kAgentPrefix = "/com/tameflare/Daemon1/agent";
constexpr const char* kApprovalPrefix = "/com/tameflare/Daemon1/approval";
constexpr const char* kGatewayInterface = "com.tameflare.Daemon1.Gateway";
constexpr const char* kAgentInterface = "com.tameflare.Daemon1.Agent";
constexpr const char* kApprovalInterface = "com.tameflare.Daemon1.Approval";
constexpr std::string_view kErrorPrefix = "com.tameflare.Daemon1.Error.";
// A log query's answer is one D-Bus string; the bus refuses messages far
// smaller than a whole traffic log, so past this the caller narrows it.
constexpr std::size_t kMaxLogReply = std::size_t{16} << 20;
// Events waiting for the bus thread; past it they are dropped (and said so)
// rather than the daemon's memory growing while the bus is stuck.
constexpr std::size_t kMaxQueuedEvents = 10000;
constexpr std::chrono::seconds kMaxReconnectDelay{30};

// The credentials every call is authorized with. The effective uid and the
// pid come from the bus (SO_PEERCRED at connect); the groups are read from
// /proc while a pidfd holds the process (SD_BUS_CREDS_AUGMENT).
constexpr std::uint64_t kCredsMask = SD_BUS_CREDS_PID | SD_BUS_CREDS_EUID | SD_BUS_CREDS_UID | SD_BUS_CREDS_GID |
                                     SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS | SD_BUS_CREDS_AUGMENT;

struct BusUnref {
    void operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }
};
struct SlotUnref {
    void operator()(sd_bus_slot* slot) const { sd_bus_slot_unref(slot); }
};
struct MessageUnref {
    void operator()(sd_bus_message* message) const { sd_bus_message_unref(message); }
};
struct CredsUnref {
    void operator()(sd_bus_creds* creds) const { sd_bus_creds_unref(creds); }
};
struct Free {
    void operator()(char* text) const { std::free(text); }
};
using BusPtr = std::unique_ptr<sd_bus, BusUnref>;
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;
using CredsPtr = std::unique_ptr<sd_bus_creds, CredsUnref>;
using CString = std::unique_ptr<char, Free>;

// An sd_bus_error that frees itself.
struct BusError {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    BusError() = default;
    BusError(const BusError&) = delete;
    BusError& operator=(const BusError&) = delete;
    ~BusError() { sd_bus_error_free(&error); }
};

std::string errno_text(int negative) {
    return std::strerror(-negative);
}

// D-Bus strings must be valid UTF-8 without NUL; what the store or a
// configuration file holds need not be. Invalid bytes become U+FFFD.
std::string valid_utf8(std::string_view text) {
    static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        const auto c = static_cast<unsigned char>(text[i]);
        std::size_t length = 0;
        std::uint32_t point = 0;
        if (c >= 0x01 && c < 0x80) {
            out.push_back(static_cast<char>(c));
            ++i;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            length = 2;
            point = c & 0x1FU;
        } else if (c >= 0xE0 && c <= 0xEF) {
            length = 3;
            point = c & 0x0FU;
        } else if (c >= 0xF0 && c <= 0xF4) {
            length = 4;
            point = c & 0x07U;
        }
        bool ok = length != 0 && i + length <= text.size();
        for (std::size_t k = 1; ok && k < length; ++k) {
            const auto next = static_cast<unsigned char>(text[i + k]);
            ok = (next & 0xC0U) == 0x80U;
            point = (point << 6U) | (next & 0x3FU);
        }
        // Overlong forms, surrogates and points past U+10FFFF are not UTF-8.
        ok = ok && !(length == 3 && point < 0x800) && !(length == 4 && point < 0x10000) &&
             !(point >= 0xD800 && point <= 0xDFFF) && point <= 0x10FFFF;
        if (ok) {
            out.append(text.substr(i, length));
            i += length;
        } else {
            out.append(kReplacement);
            ++i;
        }
    }
    return out;
}

std::string dump(const json& value) {
    return valid_utf8(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string text_of(const json& object, const char* key) {
    const auto found = object.find(key);
    return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
}

template <typename Number>
Number number_of(const json& object, const char* key) {
    const auto found = object.find(key);
    return found != object.end() && found->is_number() ? found->get<Number>() : Number{};
}

// "unknown_approval" -> "com.tameflare.Daemon1.Error.UnknownApproval".
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

int set_error(sd_bus_error* error, const std::string& name, const std::string& message, const std::string& hint) {
    std::string text = message;
    if (!hint.empty()) text += " (hint: " + hint + ")";
    return sd_bus_error_set(error, name.c_str(), valid_utf8(text).c_str());
}

int access_denied(sd_bus_error* error, const std::string& why) {
    return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, why.c_str());
}

// The caller of a message, as the bus and the kernel tell it.
struct Identity {
    Caller caller;
    UniqueFd pidfd;
};

// What a call does: a caller whose process cannot be shown to be the one
// that opened its bus connection may still read, but not change anything.
enum class Effect { read, change };

// Where the daemon gets the pidfd of the process that opened a connection.
enum class Tracking {
    // The bus hands it over: GetConnectionCredentials' "ProcessFD"
    // (dbus-daemon 1.15.x and later, dbus-broker), taken at connect.
    bus_pidfd,
    // The daemon opens it itself when the connection's unique name appears
    // (NameOwnerChanged), before the connection can call the daemon.
    tracked,
};

const char* to_string(Tracking tracking) {
    return tracking == Tracking::bus_pidfd ? "bus-pidfd" : "tracked";
}

constexpr const char* kBusService = "org.freedesktop.DBus";
constexpr const char* kBusPath = "/org/freedesktop/DBus";
constexpr const char* kBusInterface = "org.freedesktop.DBus";
// How long the daemon waits for the bus to answer a look-up of a connection.
constexpr std::uint64_t kBusLookupTimeoutUsec = std::uint64_t{5} * 1000U * 1000U;
// Connections remembered at once. dbus-daemon's system bus admits 2048 by
// default (max_completed_connections); past this bound new connections are
// not remembered, and their changing calls are judged as untracked ones.
constexpr std::size_t kMaxPeers = 16384;

// At most kMaxPeers pidfds, and never more than a quarter of the daemon's
// descriptors: the proxy needs the rest (the unit raises the limit; a
// daemon started by hand may have 1024).
std::size_t max_peers() {
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY) return kMaxPeers;
    return std::clamp<std::size_t>(static_cast<std::size_t>(files.rlim_cur / 4), 16, kMaxPeers);
}

UniqueFd open_pidfd(pid_t pid) {
    return UniqueFd(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
}

// False once the process is gone (reaped: its pid may be another's now).
bool alive(int pidfd) {
    return pidfd >= 0 && (::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0 || errno == EPERM);
}

// The pid a pidfd refers to, from /proc/self/fdinfo ("Pid:"): -1 when the
// process is gone, 0 when it is in no pid namespace of ours, nullopt when
// it cannot be read.
std::optional<pid_t> pidfd_pid(int pidfd) {
    std::ifstream info("/proc/self/fdinfo/" + std::to_string(pidfd));
    std::string line;
    while (std::getline(info, line)) {
        if (!line.starts_with("Pid:")) continue;
        try {
            return static_cast<pid_t>(std::stol(line.substr(4)));
        } catch (const std::exception&) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

// When the process started, in clock ticks since boot (/proc/PID/stat field 22).
std::optional<std::uint64_t> start_ticks(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    std::getline(stat, text);
    // The command (field 2) may hold spaces and parentheses: count from its end.
    const auto close = text.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream fields(text.substr(close + 1));
    std::string field;
    for (int number = 3; number <= 22; ++number) {
        if (!(fields >> field)) return std::nullopt;
    }
    try {
        return std::stoull(field);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// Now, in the clock of start_ticks (CLOCK_BOOTTIME in USER_HZ ticks).
std::uint64_t boottime_ticks() {
    timespec now{};
    ::clock_gettime(CLOCK_BOOTTIME, &now);
    const auto hz = static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK));
    return static_cast<std::uint64_t>(now.tv_sec) * hz + static_cast<std::uint64_t>(now.tv_nsec) * hz / 1000000000U;
}

// A connection's pid and, where the bus gives one, its pidfd, from
// org.freedesktop.DBus.GetConnectionCredentials (sd-bus 252 does not read
// "ProcessFD", so the daemon asks itself).
struct BusCredentials {
    pid_t pid = 0;
    UniqueFd pidfd;
};

int connection_credentials(sd_bus* bus, const char* name, BusCredentials& out, sd_bus_error* error) {
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_call(bus, &raw, kBusService, kBusPath, kBusInterface, "GetConnectionCredentials");
    const MessagePtr call(raw);
    if (r >= 0) r = sd_bus_message_append(call.get(), "s", name);
    raw = nullptr;
    if (r >= 0) r = sd_bus_call(bus, call.get(), kBusLookupTimeoutUsec, error, &raw);
    const MessagePtr reply(raw);
    if (r >= 0) r = sd_bus_message_enter_container(reply.get(), 'a', "{sv}");
    while (r >= 0 && (r = sd_bus_message_enter_container(reply.get(), 'e', "sv")) > 0) {
        const char* key = nullptr;
        r = sd_bus_message_read(reply.get(), "s", &key);
        if (r < 0) break;
        if (std::strcmp(key, "ProcessID") == 0) {
            std::uint32_t pid = 0;
            r = sd_bus_message_read(reply.get(), "v", "u", &pid);
            out.pid = static_cast<pid_t>(pid);
        } else if (std::strcmp(key, "ProcessFD") == 0) {
            int fd = -1;
            r = sd_bus_message_read(reply.get(), "v", "h", &fd);
            // The message owns its descriptor; the caller gets a copy.
            if (r >= 0) out.pidfd = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
            if (r >= 0 && !out.pidfd) r = -errno;
        } else {
            r = sd_bus_message_skip(reply.get(), "v");
        }
        if (r >= 0) r = sd_bus_message_exit_container(reply.get());
    }
    if (r >= 0) r = sd_bus_message_exit_container(reply.get());
    return r;
}

// The pid of a connection, from org.freedesktop.DBus.GetConnectionUnixProcessID.
int connection_pid(sd_bus* bus, const char* name, pid_t& pid, sd_bus_error* error) {
    sd_bus_message* raw = nullptr;
    int r =
        sd_bus_message_new_method_call(bus, &raw, kBusService, kBusPath, kBusInterface, "GetConnectionUnixProcessID");
    const MessagePtr call(raw);
    if (r >= 0) r = sd_bus_message_append(call.get(), "s", name);
    raw = nullptr;
    if (r >= 0) r = sd_bus_call(bus, call.get(), kBusLookupTimeoutUsec, error, &raw);
    const MessagePtr reply(raw);
    std::uint32_t value = 0;
    if (r >= 0) r = sd_bus_message_read(reply.get(), "u", &value);
    if (r >= 0) pid = static_cast<pid_t>(value);
    return r;
}

// The process that opened a connection, as the daemon saw it appear.
struct Peer {
    pid_t pid = 0;   // 0: the bus could not tell it
    UniqueFd pidfd;  // none: pidfd_open failed (ESRCH: the process was already gone)
    int open_error = 0;
};

// Why a caller's process cannot be shown to be the one that opened its
// connection; "" when it can. `code` goes to the log, `text` to the caller.
struct Discontinuity {
    std::string code;
    std::string text;
    [[nodiscard]] bool empty() const { return code.empty(); }
};

std::optional<std::string> decode(const char* path, const char* prefix) {
    char* raw = nullptr;
    if (sd_bus_path_decode(path, prefix, &raw) <= 0) return std::nullopt;
    const CString label(raw);
    if (!label || *label == '\0') return std::nullopt;
    return std::string(label.get());
}

std::string encode(const char* prefix, const std::string& label) {
    char* raw = nullptr;
    if (sd_bus_path_encode(prefix, label.c_str(), &raw) < 0) throw std::bad_alloc();
    const CString path(raw);
    return path.get();
}

// "all", "gateway:NAME", "connector:NAME" from a kill switch document.
std::vector<std::string> kill_scopes(const json& kill) {
    std::vector<std::string> scopes;
    if (kill.value("all", false)) scopes.emplace_back("all");
    for (const char* kind : {"gateways", "connectors"}) {
        const auto names = kill.find(kind);
        if (names == kill.end() || !names->is_array()) continue;
        const std::string prefix = std::string(kind).substr(0, std::strlen(kind) - 1) + ":";
        for (const auto& name : *names) {
            if (name.is_string()) scopes.push_back(prefix + name.get<std::string>());
        }
    }
    return scopes;
}

int append_strings(sd_bus_message* reply, const std::vector<std::string>& values) {
    int r = sd_bus_message_open_container(reply, 'a', "s");
    for (const auto& value : values) {
        if (r < 0) return r;
        r = sd_bus_message_append(reply, "s", valid_utf8(value).c_str());
    }
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

int read_strings(sd_bus_message* message, std::vector<std::string>& out) {
    int r = sd_bus_message_enter_container(message, 'a', "s");
    if (r < 0) return r;
    const char* value = nullptr;
    while ((r = sd_bus_message_read(message, "s", &value)) > 0) out.emplace_back(value);
    return r < 0 ? r : sd_bus_message_exit_container(message);
}

int read_filters(sd_bus_message* message, std::vector<std::pair<std::string, std::string>>& out) {
    int r = sd_bus_message_enter_container(message, 'a', "{ss}");
    if (r < 0) return r;
    const char* key = nullptr;
    const char* value = nullptr;
    while ((r = sd_bus_message_read(message, "{ss}", &key, &value)) > 0) out.emplace_back(key, value);
    return r < 0 ? r : sd_bus_message_exit_container(message);
}

ControlError bad_field(const std::string& name, const std::string& what, const std::string& hint = {}) {
    return {ControlError::Kind::bad_request, "bad_field", "filter \"" + name + "\" " + what, hint};
}

// The filters of docs/api.md's Logs, as a{ss}; the answer is always JSON Lines.
store::LogFilter log_filter(const std::vector<std::pair<std::string, std::string>>& filters, bool audit) {
    store::LogFilter filter;
    const auto now = store::Clock::now();
    std::set<std::string> seen;
    for (const auto& [name, value] : filters) {
        if (!seen.insert(name).second) throw bad_field(name, "is given twice");
        if (name == "since" || name == "until") {
            const auto time = store::parse_time(value, now);
            if (!time) {
                throw bad_field(name, "is neither an RFC 3339 time nor an age",
                                "e.g. 2026-11-26T10:00:00Z, 90s, 15m, 2h or 7d");
            }
            (name == "since" ? filter.since : filter.until) = time;
        } else if (name == "gateway") {
            filter.gateway = value;
        } else if (name == "agent") {
            filter.agent = value;
        } else if (name == "action") {
            filter.action = value;
        } else if (name == "connector" && !audit) {
            filter.connector = value;
        } else if (name == "decision" && !audit) {
            filter.decision = value;
        } else if (name == "event" && audit) {
            filter.event = value;
        } else if (name == "limit") {
            if (value.empty() || value.size() > 9 || value.find_first_not_of("0123456789") != std::string::npos) {
                throw bad_field(name, "must be a whole number", "the newest N records; 0 or none for all");
            }
            filter.limit = std::stoul(value);
        } else {
            throw bad_field(name, "is not a filter of this log",
                            audit ? "filters: since, until, gateway, agent, action, event, limit"
                                  : "filters: since, until, gateway, agent, connector, action, decision, limit");
        }
    }
    return filter;
}

std::uint64_t monotonic_usec() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1000000U + static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
}

}  // namespace

struct BusService::Impl {
    BusOptions options;
    control::Control& control;
    BusSources sources;
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

    // What the daemon's own emissions (InterfacesAdded, PropertiesChanged)
    // read: the state as the events told it, with no caller to authorize.
    std::map<std::string, json, std::less<>> approvals;
    std::map<std::string, json, std::less<>> agents;
    std::set<std::string, std::less<>> gateways;
    json kill = json::object();
    std::map<std::string, std::string, std::less<>> launchers;  // agent id -> the unique name that launched it

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
        : options(std::move(bus_options)), control(control_plane), sources(bus_sources) {}

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

    void properties_changed(const char* path, const char* interface, const std::vector<const char*>& names) {
        if (!bus) return;
        std::vector<char*> list;
        list.reserve(names.size() + 1);
        for (const char* name : names) list.push_back(const_cast<char*>(name));
        list.push_back(nullptr);
        emitted(sd_bus_emit_properties_changed_strv(bus.get(), path, interface, list.data()), "PropertiesChanged");
    }

    void handle(const control::Event& event);
    void sync_gateways();

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
        } catch (const ControlError& failure) {
            return set_error(error, error_name(failure.code()), failure.what(), failure.hint());
        } catch (const daemon::LaunchError& failure) {
            return set_error(error, error_name("launch_refused"), failure.what(), failure.hint());
        } catch (const std::bad_alloc&) {
            return -ENOMEM;
        } catch (const std::exception& failure) {
            log(LogLevel::error, std::string("D-Bus call failed: ") + failure.what());
            return set_error(error, error_name("internal"), std::string("internal error: ") + failure.what(), "");
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

    std::vector<std::string> approval_ids(sd_bus* connection) const {
        std::vector<std::string> ids;
        if (own_emission(connection)) {
            for (const auto& [id, data] : approvals) ids.push_back(id);
        } else {
            for (const auto& request : sources.approvals->pending()) ids.push_back(request.id);
        }
        return ids;
    }
    std::vector<std::string> agent_ids(sd_bus* connection) const {
        std::vector<std::string> ids;
        if (own_emission(connection)) {
            for (const auto& [id, data] : agents) ids.push_back(id);
        } else if (sources.agents != nullptr) {
            for (const auto& agent : sources.agents->list()) ids.push_back(agent.id);
        }
        return ids;
    }
    std::vector<std::string> gateway_names(sd_bus* connection) const {
        std::vector<std::string> names;
        if (own_emission(connection)) {
            names.assign(gateways.begin(), gateways.end());
        } else {
            for (const auto& [name, gateway] : sources.config->snapshot()->gateways) names.push_back(name);
        }
        return names;
    }
};

namespace {

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
    return reply_json(m, impl.control.status(id.caller));
}

int list_gateways(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, impl.control.gateways(id.caller));
}

int get_gateway(Impl& impl, sd_bus_message* m, Identity& id) {
    const char* name = nullptr;
    if (const int r = sd_bus_message_read(m, "s", &name); r < 0) return r;
    return reply_json(m, impl.control.gateway(id.caller, name));
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
    if (!result.value("reloaded", false)) {
        // Refused: the caller's to fix. The first error is in the message; CheckConfig lists them all.
        const auto& errors = result["errors"];
        std::string first = errors.empty() ? std::string("the configuration does not load")
                                           : errors.front().value("message", std::string());
        throw ControlError(
            ControlError::Kind::bad_request, "config_invalid",
            std::to_string(errors.size()) + " error(s) in the configuration; the running one stays in force: " + first,
            "CheckConfig lists every error; fix them and reload again");
    }
    return reply_empty(m);
}

int check_config(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, impl.control.check_config(id.caller));
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
    for (const auto& agent : listed.value("agents", json::array())) {
        if (r < 0) break;
        r = sd_bus_message_append(reply.get(), "(ssuus)", valid_utf8(text_of(agent, "id")).c_str(),
                                  valid_utf8(text_of(agent, "gateway")).c_str(), number_of<std::uint32_t>(agent, "uid"),
                                  number_of<std::uint32_t>(agent, "pid"),
                                  valid_utf8(text_of(agent, "isolation")).c_str());
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
    // Agents are refused here as everywhere else on the control plane.
    impl.control.authorize(id.caller, Role::none);
    if (impl.sources.agents == nullptr) {
        throw ControlError(ControlError::Kind::unavailable, "unavailable",
                           "kernel enforcement is off, so tameflared launches no agents",
                           "tf doctor tells what is missing");
    }
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
    const std::string agent = impl.sources.agents->launch(caller, request, std::move(copies));
    if (const char* sender = sd_bus_message_get_sender(m); sender != nullptr) impl.launchers[agent] = sender;
    return reply_string(m, agent);
}

int list_approvals(Impl& impl, sd_bus_message* m, Identity& id) {
    const auto listed = impl.control.approvals(id.caller);
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    const MessagePtr reply(raw);
    if (r >= 0) r = sd_bus_message_open_container(reply.get(), 'a', "(sssssst)");
    for (const auto& approval : listed.value("approvals", json::array())) {
        if (r < 0) break;
        r = sd_bus_message_append(
            reply.get(), "(sssssst)", valid_utf8(text_of(approval, "id")).c_str(),
            valid_utf8(text_of(approval, "gateway")).c_str(), valid_utf8(text_of(approval, "agent")).c_str(),
            valid_utf8(text_of(approval, "action")).c_str(), valid_utf8(text_of(approval, "risk")).c_str(),
            dump(approval.value("parameters", json::object())).c_str(),
            number_of<std::uint64_t>(approval, "age_seconds"));
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
    return reply_json(m, impl.control.kill_switch(id.caller));
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
    return reply_json(m, impl.control.verify_audit(id.caller));
}

int list_secrets(Impl& impl, sd_bus_message* m, Identity& id) {
    return reply_json(m, impl.control.vault(id.caller));
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
    return sd_bus_reply_method_return(m, "u", number_of<std::uint32_t>(rotated, "rotated"));
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
            if (name == "KillSwitch") return sd_bus_message_append(reply, "b", kill.value("active", false) ? 1 : 0);
            return append_strings(reply, kill_scopes(kill));
        }
        if (name == "PendingApprovals") {
            const auto size = impl.control.approvals(*caller).value("approvals", json::array()).size();
            return sd_bus_message_append(reply, "u", static_cast<std::uint32_t>(size));
        }
        if (name == "Agents") {
            const auto size = impl.control.agents(*caller).value("agents", json::array()).size();
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
        return impl.control.gateway(caller, label);
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
        return impl.control.agent(caller, label);
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
        return impl.control.approval(caller, label);
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

}  // namespace

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
