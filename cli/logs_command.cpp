// tf status, gateways, reload, agents, approvals, kill-switch, logs, metrics:
// the commands that manage the running tameflared, as clients of its REST
// socket (docs/api.md). Whatever they do, curl --unix-socket can do; the
// daemon authorizes every call by the caller's kernel credentials, so tf
// holds no privilege of its own.
#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/commands.h"
#include "cli/control_options.h"
#include "cli/daemon_call.h"
#include "cli/output.h"
#include "common/unique_fd.h"
#include "daemon/store/query.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>
namespace tameflare::cli {

namespace {

using namespace control;

constexpr const char* kLogsUsage = R"(Usage: tf logs [-f] [--last N] [FILTERS] [--format table|csv|jsonl]

The traffic log as tameflared serves it: one row per request the proxy decided,
oldest first. Unlike tf traffic, which reads the database file (root or
tameflared's user), this asks the running daemon (role viewer).

  -f, --follow         after the last N rows, print each new one as it is decided.
                       When tameflared goes away (a restart), tf says so on stderr,
                       tries again after 0.2 s, doubling to 5 s, and once back prints
                       the rows logged meanwhile (each row once), then follows
                       again; it ends on a signal (Ctrl-C), or with status 1 when
                       the daemon refuses it
  --last N             the newest N rows (default 50; 0: all)
Filters (exact values):
  --since T, --until T RFC 3339 (2026-11-26T10:00:00Z) or an age (90s, 15m, 2h, 7d);
                       --until does not go with --follow
  --gateway G  --agent A  --connector C  --action X
  --decision D         allowed, denied, pending_approval, rate_limited, kill_switch,
                       would_deny, would_require_approval, would_rate_limit,
                       approved, approval_timeout, error
Output:
  --format F           table (default; control characters escaped, long cells cut),
                       csv (RFC 4180, formula cells defused) or jsonl (every field)
  --json               the same as --format jsonl
)";

// ---------------------------------------------------------------------------
// Logs

// Rows tf logs -f printed, so each is printed once: the history and the
// stream overlap, and after a reconnection the rows logged meanwhile are asked
// for again. A row's time is when its request came in, and it is logged when
// the request ends, so they are asked for from a while (kResyncMargin) before
// the newest row seen, though not from before tf started following.
class SeenRows {
public:
    static constexpr auto kResyncMargin = std::chrono::minutes(5);

    explicit SeenRows(store::Clock::time_point start) : start_(start), newest_(start) {}

    // false when the row was printed before.
    bool add(const store::TrafficRow& row) {
        if (!ids_.emplace(row.request_id, row.time).second) return false;
        newest_ = std::max(newest_, row.time);
        if (ids_.size() > prune_at_) {
            std::erase_if(ids_, [this](const auto& seen) { return seen.second < since(); });
            prune_at_ = std::max(kPruneAt, 2 * ids_.size());
        }
        return true;
    }
    [[nodiscard]] store::Clock::time_point since() const { return std::max(start_, newest_ - kResyncMargin); }

private:
    static constexpr std::size_t kPruneAt = 4096;
    store::Clock::time_point start_;
    store::Clock::time_point newest_;
    std::map<std::string, store::Clock::time_point> ids_;
    std::size_t prune_at_ = kPruneAt;
};

bool matches(const store::LogFilter& filter, const store::TrafficRow& row) {
    const std::array<std::pair<const std::string*, const std::string*>, 5> filters{{
        {&row.gateway, &filter.gateway},
        {&row.agent, &filter.agent},
        {&row.connector, &filter.connector},
        {&row.action, &filter.action},
        {&row.decision, &filter.decision},
    }};
    return std::all_of(filters.begin(), filters.end(),
                       [](const auto& each) { return each.second->empty() || *each.first == *each.second; });
}

int logs(const ApiClient& client, const Options& options, store::Format format) {
    RawOutput raw;
    std::ostream out(&raw);
    SeenRows seen(store::Clock::now());
    const auto history = [&](const ApiClient& asked) {
        store::LogFilter last = options.filter;
        last.limit = options.last.value_or(50);
        const auto count = write_log(asked, LogKind::traffic, last, format, out,
                                     [&seen](const json& row) { seen.add(traffic_row_from_json(row)); });
        if (format == store::Format::table && count == 0 && !options.follow) out << "no matching records\n";
        out.flush();
        if (last.limit != 0 && count == last.limit && !options.follow) {
            std::fprintf(stderr, "tf logs: the newest %zu rows; --last N for more, --last 0 for all\n", count);
        }
    };
    if (!options.follow) {
        history(client);
        return kExitOk;
    }

    store::TrafficWriter writer(out, format == store::Format::csv ? store::Format::csv : store::Format::table);
    const auto print = [&](const json& document) {
        if (!document.is_object()) return;
        const auto row = traffic_row_from_json(document);
        if (!matches(options.filter, row) || !seen.add(row)) return;
        if (format == store::Format::jsonl) {
            out << dump(document) << '\n';  // as the daemon sent it
        } else {
            writer.write(row);
        }
        out.flush();
    };
    // The stream opens before the history is read, so no row decided in
    // between is missed; after a reconnection, the rows logged meanwhile.
    FollowStream stream(client.socket(), "/v1/events?types=traffic",
                        [&](const ApiClient& asked, bool reconnected) -> std::vector<SseEvent> {
                            if (!reconnected) {
                                history(asked);
                                return {};
                            }
                            store::LogFilter missed = options.filter;
                            missed.since = std::max(options.filter.since.value_or(seen.since()), seen.since());
                            const auto document = json_of(asked.get(log_target(LogKind::traffic, missed, "json")));
                            for (const auto& row : traffic_documents(document)) print(row);
                            return {};
                        });
    stream.open();
    while (auto event = stream.next()) print(event_data(*event));
    return kExitOk;  // not reached: only interrupt() ends a FollowStream
}

}  // namespace

int logs_command(std::span<char*> args) {
    const Command command{
        "tf logs",
        kLogsUsage,
        {kJson, kFollow, kLast, kGateway, kAgent, kConnector, kAction, kDecision, kSince, kUntil, kFormat}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    if (options.json && options.format && *options.format != "jsonl") {
        return usage_error(command, "--json is --format jsonl; it does not go with --format " + *options.format);
    }
    if (options.follow && options.filter.until) return usage_error(command, "--until does not go with --follow");
    const auto format = *store::parse_format(options.json ? "jsonl" : options.format.value_or("table"));
    return with_client(command, options, [&](const ApiClient& client) { return logs(client, options, format); });
}

}  // namespace tameflare::cli
