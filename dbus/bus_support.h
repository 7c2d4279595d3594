// The D-Bus front end's helpers (sd-bus handles, errors, UTF-8, log
// filters, object paths, the bus's own names), for its own files only.
#pragma once

#include "dbus/bus_front.h"
#include "dbus/bus_service.h"

#include "common/log.h"
#include "common/unique_fd.h"
#include "daemon/control/agent_registry.h"
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

namespace bus_detail {

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

inline std::string errno_text(int negative) {
    return std::strerror(-negative);
}

// D-Bus strings must be valid UTF-8 without NUL; what the store or a
// configuration file holds need not be. Invalid bytes become U+FFFD.
inline std::string valid_utf8(std::string_view text) {
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

inline int access_denied(sd_bus_error* error, const std::string& why) {
    return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, why.c_str());
}

// Where the daemon gets the pidfd of the process that opened a connection.
enum class Tracking {
    // The bus hands it over: GetConnectionCredentials' "ProcessFD"
    // (dbus-daemon 1.15.x and later, dbus-broker), taken at connect.
    bus_pidfd,
    // The daemon opens it itself when the connection's unique name appears
    // (NameOwnerChanged), before the connection can call the daemon.
    tracked,
};

inline const char* to_string(Tracking tracking) {
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
inline std::size_t max_peers() {
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY) return kMaxPeers;
    return std::clamp<std::size_t>(static_cast<std::size_t>(files.rlim_cur / 4), 16, kMaxPeers);
}

inline UniqueFd open_pidfd(pid_t pid) {
    return UniqueFd(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
}

// False once the process is gone (reaped: its pid may be another's now).
inline bool alive(int pidfd) {
    return pidfd >= 0 && (::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0 || errno == EPERM);
}

// The pid a pidfd refers to, from /proc/self/fdinfo ("Pid:"): -1 when the
// process is gone, 0 when it is in no pid namespace of ours, nullopt when
// it cannot be read.
inline std::optional<pid_t> pidfd_pid(int pidfd) {
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
inline std::optional<std::uint64_t> start_ticks(pid_t pid) {
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
inline std::uint64_t boottime_ticks() {
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

inline int connection_credentials(sd_bus* bus, const char* name, BusCredentials& out, sd_bus_error* error) {
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
inline int connection_pid(sd_bus* bus, const char* name, pid_t& pid, sd_bus_error* error) {
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

inline std::optional<std::string> decode(const char* path, const char* prefix) {
    char* raw = nullptr;
    if (sd_bus_path_decode(path, prefix, &raw) <= 0) return std::nullopt;
    const CString label(raw);
    if (!label || *label == '\0') return std::nullopt;
    return std::string(label.get());
}

inline int append_strings(sd_bus_message* reply, const std::vector<std::string>& values) {
    int r = sd_bus_message_open_container(reply, 'a', "s");
    for (const auto& value : values) {
        if (r < 0) return r;
        r = sd_bus_message_append(reply, "s", valid_utf8(value).c_str());
    }
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

inline int read_strings(sd_bus_message* message, std::vector<std::string>& out) {
    int r = sd_bus_message_enter_container(message, 'a', "s");
    if (r < 0) return r;
    const char* value = nullptr;
    while ((r = sd_bus_message_read(message, "s", &value)) > 0) out.emplace_back(value);
    return r < 0 ? r : sd_bus_message_exit_container(message);
}

inline int read_filters(sd_bus_message* message, std::vector<std::pair<std::string, std::string>>& out) {
    int r = sd_bus_message_enter_container(message, 'a', "{ss}");
    if (r < 0) return r;
    const char* key = nullptr;
    const char* value = nullptr;
    while ((r = sd_bus_message_read(message, "{ss}", &key, &value)) > 0) out.emplace_back(key, value);
    return r < 0 ? r : sd_bus_message_exit_container(message);
}

inline std::uint64_t monotonic_usec() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1000000U + static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
}

}  // namespace bus_detail

}  // namespace tameflare::dbus
