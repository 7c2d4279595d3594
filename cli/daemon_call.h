// tf as a client of the running tameflared, shared by every command that asks
// it (cli/control_commands.cpp, and the vault, log and policy commands when no
// offline option is given): finding the socket and turning what can go wrong
// into the exit statuses, following the event stream across restarts of the
// daemon, and the logs as the daemon serves them.
#pragma once

#include "cli/api_client.h"
#include "daemon/store/query.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::cli {

// "tf: MESSAGE" and "hint: HINT" on stderr, escaped.
void print_api_error(const ApiResponse& response);

struct DaemonCall {
    std::string command;  // "tf vault list", for messages
    std::string socket;   // --socket PATH ("": $TAMEFLARE_API_SOCKET or the configuration's api.socket)
    std::string config;   // -c FILE ("": the default file, built-in defaults when it is absent)
    bool json = false;    // an API error's document goes to stdout too
    // When the daemon cannot be reached: another way to do it (a "hint:" line).
    std::string unreachable_hint;
};

// Finds the socket, runs `body` with a client, and turns what can go wrong
// into the exit statuses: 2 a -c FILE that does not load, 1 the daemon
// refused or failed (its message and hint), 3 it cannot be reached (what to do).
int run_with_daemon(const DaemonCall& call, const std::function<int(const ApiClient&)>& body);

// GET /v1/events that outlives a restart of the daemon. When the stream ends
// or breaks it says so in one line, tries again after 0.2 s, doubling up to
// 5 s, until the daemon answers, says so again, and calls `resync` (as on the
// first connection, once the stream is open, so nothing falls in between)
// before it hands out the stream's events again. It gives up only when the
// daemon refuses (a 4xx, as 403 when the caller lost its role).
class FollowStream {
public:
    // What was missed, as events handed out before the stream's own (or
    // printed by `resync` itself); `reconnected` is false the first time.
    using Resync = std::function<std::vector<SseEvent>(const ApiClient& client, bool reconnected)>;
    // A line about the connection ("tf: ... reconnecting ..."); stderr by default.
    using Notice = std::function<void(const std::string& line)>;

    FollowStream(const ApiSocket& socket, std::string target, Resync resync, Notice notice = {});
    FollowStream(const FollowStream&) = delete;
    FollowStream& operator=(const FollowStream&) = delete;
    ~FollowStream();

    // The first connection: throws ApiUnreachable or ApiFailure, as
    // ApiClient::events does, so a daemon that is not there at the start is
    // reported at once.
    void open();
    // The next event; nullopt only after interrupt(). Throws ApiFailure when
    // the daemon refuses a reconnection.
    std::optional<SseEvent> next();
    // From any thread, also during a backoff wait or a reconnection: next()
    // returns nullopt at once.
    void interrupt();

private:
    void connect(bool reconnected);
    void reconnect();
    bool wait(std::chrono::milliseconds delay);  // false when interrupted
    [[nodiscard]] bool interrupted() const;

    std::shared_ptr<Interrupter> interrupter_;
    ApiClient client_;
    std::string target_;
    Resync resync_;
    Notice notice_;
    std::unique_ptr<EventStream> stream_;
    std::deque<SseEvent> pending_;
    std::mutex mutex_;  // for the backoff wait
    std::condition_variable wake_;
};

// The data of an event: its JSON, or the text when it is not JSON.
nlohmann::json event_data(const SseEvent& event);

// ---------------------------------------------------------------------------
// The logs as the daemon serves them (GET /v1/traffic, GET /v1/audit)

using store::LogKind;

// A filter flag of tf logs, tf traffic and tf audit (--since, --gateway, ...:
// `name` without its dashes) set through the one parser (store::set_log_filter);
// the usage error when it refuses the value.
std::optional<std::string> set_filter_flag(store::LogFilter& filter, LogKind kind, const std::string& name,
                                           const std::string& value);

// The route with `filter` as its query (times as RFC 3339) and `format`
// ("json", "jsonl" or "csv").
std::string log_target(LogKind kind, const store::LogFilter& filter, std::string_view format);

// Writes the log as `tf traffic` / `tf audit` write it from the database: a
// table (with its header) rebuilt from JSON Lines, CSV and JSON Lines as the
// daemon wrote them (the store's writers, there). `seen` (optional) is given
// each row of the table and JSON Lines forms. Returns how many rows or
// records were written. Throws ApiFailure and ApiUnreachable.
std::size_t write_log(const ApiClient& client, LogKind kind, const store::LogFilter& filter, store::Format format,
                      std::ostream& out, const std::function<void(const nlohmann::json&)>& seen = {});

}  // namespace tameflare::cli
