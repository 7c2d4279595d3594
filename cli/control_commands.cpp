// tf status, gateways, reload, agents, approvals, kill-switch, logs, metrics:
// the commands that manage the running tameflared, as clients of its REST
// socket (docs/api.md). Whatever they do, curl --unix-socket can do; the
// daemon authorizes every call by the caller's kernel credentials, so tf
// holds no privilege of its own.
#include "cli/api_client.h"
#include "cli/commands.h"
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

using nlohmann::json;

// ---------------------------------------------------------------------------
// Usage

constexpr const char* kConnectionHelp = R"(Reaching tameflared:
  --socket PATH        its API socket (default: $TAMEFLARE_API_SOCKET, else api.socket
                       in its configuration, else /run/tameflare/api.sock)
  -c, --config FILE    its configuration, to find the socket
                       (default /etc/tameflare/tameflared.json)
  -h, --help           this text

Exit status: 0 done, 1 the daemon refused or failed the operation, 2 usage
error, 3 tameflared cannot be reached (not running, or no permission on the
socket; logs -f and approvals watch: only when it is not there at the start).
)";

constexpr const char* kStatusUsage = R"(Usage: tf status [--json]

The running tameflared at a glance: version and uptime, kernel or explicit
enforcement, how many gateways, agents and pending approvals, the kill switch,
the proxy's counters, and the role the daemon gives you. Any user in the
socket's group may ask (role viewer).

  --json               print the API's JSON document
)";

constexpr const char* kGatewaysUsage = R"(Usage: tf gateways [list] [-q]
       tf gateways show NAME
       tf gateways set-enforcement NAME monitor|soft|full

list (the default)     every gateway with its enforcement level, connectors,
                       policies, rate limit and approval timeout; -q: names only
show NAME              one gateway: connectors with their domains, credential
                       and rules, policies, TCP destinations, who may launch
set-enforcement NAME LEVEL
                       full: decisions are enforced; soft: approvals are held,
                       denials are logged as would_deny and forwarded;
                       monitor: everything is forwarded and the decision only
                       logged; default: the gateway file's level again. Role
                       admin. Kept across reloads and restarts until set back
                       to default.

  --json               print the API's JSON document
  -q, --quiet          list: one name a line
)";

constexpr const char* kReloadUsage = R"(Usage: tf reload [--json]

Makes tameflared read its configuration, connectors and gateways again (as
SIGHUP does). An invalid configuration is refused and every error printed; the
running one stays. Role admin.

  --json               print the API's JSON document
)";

constexpr const char* kAgentsUsage = R"(Usage: tf agents [list] [-q]
       tf agents show ID
       tf agents stop ID

list (the default)     the agents tameflared runs (tf run) or enforces (tf enforce):
                       yours, or all of them with role viewer; -q: ids only
show ID                one agent: gateway, isolation, process, user, cgroup
stop ID                ends an agent (its whole cgroup); your own, or any with role admin

  --json               print the API's JSON document
  -q, --quiet          list: one id a line
)";

constexpr const char* kApprovalsUsage = R"(Usage: tf approvals [list] [-q]
       tf approvals show ID
       tf approvals approve ID [--note TEXT]
       tf approvals deny ID [--note TEXT]
       tf approvals watch [--note TEXT] [--json]

Requests that a gateway's policy holds for a human (require_approval). The
agent's request waits until it is answered or times out (then it is refused
with 408).

list (the default)     pending requests: gateway, agent, action, risk, age; -q: ids only
show ID                one request with its parameters and the reason it is held
approve ID, deny ID    answer it (role member); --note is recorded in the audit log
watch                  on a terminal: shows each pending request as it arrives and
                       reads one key: a approve, d deny, s skip, q quit.
                       Otherwise (or with --json): one JSON object a line,
                       {"event": "approval.pending", "data": {..}} for each request
                       pending at the start, then {"event", "id", "data"} for each
                       approval.requested and approval.resolved event.
                       When tameflared goes away (a restart), watch says so on
                       stderr, tries again after 0.2 s, doubling to 5 s, and once
                       back lists the pending requests again (approval.pending
                       lines: the list as it is then); it ends on q or a signal
                       (Ctrl-C), or with status 1 when the daemon refuses it.

  --note TEXT          approve, deny, watch: a note kept with the answer
  --json               print the API's JSON document
  -q, --quiet          list: one id a line
)";

constexpr const char* kKillSwitchUsage = R"(Usage: tf kill-switch [show]
       tf kill-switch on|off [--scope all|gateway:NAME|connector:NAME] [--reason TEXT]

The kill switch refuses every request in its scope at once, whatever the
policy says, until it is turned off. It survives a restart of tameflared.

show (the default)     whether it is on, for what, why and who turned it on
on, off                turn it on or off for a scope (default all; off for all
                       lifts every scope); role owner

  --scope S            all, gateway:NAME or connector:NAME
  --reason TEXT        recorded in the audit log and shown by show
  --json               print the API's JSON document
)";

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

constexpr const char* kMetricsUsage = R"(Usage: tf metrics

tameflared's metrics in the Prometheus text format, as GET /metrics serves them
(role viewer): requests by gateway, agent, connector, decision and action type,
denials, approvals, latency histograms, connections, the kill switch, pending
approvals, connector errors, rate-limit hits, agents.
)";

// ---------------------------------------------------------------------------
// Options

enum OptionId {
    kConfig = 'c',
    kFollow = 'f',
    kHelp = 'h',
    kQuiet = 'q',
    kSocket = 256,
    kJson,
    kNote,
    kScope,
    kReason,
    kLast,
    kGateway,
    kAgent,
    kConnector,
    kAction,
    kDecision,
    kSince,
    kUntil,
    kFormat,
};

constexpr std::array kAllOptions = {
    option{"socket", required_argument, nullptr, kSocket}, option{"config", required_argument, nullptr, kConfig},
    option{"json", no_argument, nullptr, kJson},           option{"quiet", no_argument, nullptr, kQuiet},
    option{"note", required_argument, nullptr, kNote},     option{"scope", required_argument, nullptr, kScope},
    option{"reason", required_argument, nullptr, kReason}, option{"follow", no_argument, nullptr, kFollow},
    option{"last", required_argument, nullptr, kLast},     option{"gateway", required_argument, nullptr, kGateway},
    option{"agent", required_argument, nullptr, kAgent},   option{"connector", required_argument, nullptr, kConnector},
    option{"action", required_argument, nullptr, kAction}, option{"decision", required_argument, nullptr, kDecision},
    option{"since", required_argument, nullptr, kSince},   option{"until", required_argument, nullptr, kUntil},
    option{"format", required_argument, nullptr, kFormat}, option{"help", no_argument, nullptr, kHelp},
};

struct Command {
    std::string name;  // "tf gateways"
    const char* usage;
    std::vector<int> options;  // besides --socket, -c and --help
};

struct Options {
    std::string socket;
    std::string config;
    bool json = false;
    bool quiet = false;
    bool follow = false;
    std::optional<std::string> note;
    std::optional<std::string> scope;
    std::optional<std::string> reason;
    std::optional<std::size_t> last;
    store::LogFilter filter;  // tf logs: --since, --until, --gateway, --agent, --connector, --action, --decision
    std::optional<std::string> format;
    std::vector<std::string> words;  // the operands: a verb and its arguments
};

void print_usage(const Command& command, std::FILE* to) {
    std::fputs(command.usage, to);
    std::fputc('\n', to);
    std::fputs(kConnectionHelp, to);
}

int usage_error(const Command& command, const std::string& message) {
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for the options.\n", command.name.c_str(), message.c_str(),
                 command.name.c_str());
    return kExitUsage;
}

std::string option_name(int id) {
    for (const auto& entry : kAllOptions) {
        if (entry.val == id) return std::string("--") + entry.name;
    }
    return id > 0 && id < 256 ? std::string("-") + static_cast<char>(id) : "an option";
}

bool takes(const Command& command, int id) {
    return id == kSocket || id == kConfig || id == kHelp ||
           std::find(command.options.begin(), command.options.end(), id) != command.options.end();
}

// Fills `options` from `args` (args[0] is the command's word); options may
// come before or after the operands. nullopt to go on, or the exit status
// (after --help or a usage error).
std::optional<int> parse(std::span<char*> args, const Command& command, Options& options) {
    std::vector<option> table;
    std::string shorts = ":";  // ':' first: a missing value is reported as such
    for (const auto& entry : kAllOptions) {
        if (!takes(command, entry.val)) continue;
        table.push_back(entry);
        if (entry.val < 256) {
            shorts += static_cast<char>(entry.val);
            if (entry.has_arg == required_argument) shorts += ':';
        }
    }
    table.push_back(option{nullptr, 0, nullptr, 0});

    optind = 0;  // a full reset of getopt's state
    opterr = 0;
    const int argc = static_cast<int>(args.size());
    int c = 0;
    while ((c = getopt_long(argc, args.data(), shorts.c_str(), table.data(), nullptr)) != -1) {
        const std::string value = optarg != nullptr ? optarg : "";
        switch (c) {
            case kSocket: options.socket = value; break;
            case kConfig: options.config = value; break;
            case kJson: options.json = true; break;
            case kQuiet: options.quiet = true; break;
            case kFollow: options.follow = true; break;
            case kNote: options.note = value; break;
            case kScope: options.scope = value; break;
            case kReason: options.reason = value; break;
            case kLast: {
                const bool number =
                    !value.empty() && value.size() <= 9 && value.find_first_not_of("0123456789") == std::string::npos;
                if (!number) {
                    return usage_error(
                        command, "--last \"" + value + "\" is not a number of rows: give a whole number (0: all)");
                }
                options.last = static_cast<std::size_t>(std::stoul(value));
                break;
            }
            case kSince:
            case kUntil: {
                const auto time = store::parse_time(value, store::Clock::now());
                if (!time) {
                    return usage_error(command, option_name(c) + " \"" + value +
                                                    "\" is not a time: give RFC 3339 (2026-11-26T10:00:00Z) or an "
                                                    "age (90s, 15m, 2h, 7d)");
                }
                (c == kSince ? options.filter.since : options.filter.until) = time;
                break;
            }
            case kGateway: options.filter.gateway = value; break;
            case kAgent: options.filter.agent = value; break;
            case kConnector: options.filter.connector = value; break;
            case kAction: options.filter.action = value; break;
            case kDecision: options.filter.decision = value; break;
            case kFormat:
                if (value != "table" && value != "csv" && value != "jsonl") {
                    return usage_error(command, "--format \"" + value + "\" is not a format: give table, csv or jsonl");
                }
                options.format = value;
                break;
            case kHelp: print_usage(command, stdout); return kExitOk;
            case ':': return usage_error(command, option_name(optopt) + " needs a value");
            default: {
                const std::string given = optopt != 0 && optopt < 256 ? std::string("-") + static_cast<char>(optopt)
                                                                      : std::string(args[optind - 1]);
                return usage_error(command, "\"" + given + "\" is not an option of " + command.name);
            }
        }
    }
    for (int i = optind; i < argc; ++i) options.words.emplace_back(args[static_cast<std::size_t>(i)]);
    return std::nullopt;
}

// ---------------------------------------------------------------------------
// Colours

Colour risk_colour(const std::string& risk) {
    if (risk == "high" || risk == "critical") return Colour::red;
    if (risk == "medium") return Colour::yellow;
    return Colour::none;
}

Colour level_colour(const std::string& level) {
    if (level == "full") return Colour::green;
    if (level == "soft") return Colour::yellow;
    if (level == "monitor") return Colour::red;
    return Colour::none;
}

// ---------------------------------------------------------------------------
// Talking to the daemon

int with_client(const Command& command, const Options& options, const std::function<int(const ApiClient&)>& body) {
    return run_with_daemon(DaemonCall{command.name, options.socket, options.config, options.json, ""}, body);
}

// The operand after the verb, or a usage error.
std::optional<std::string> operand(const Command& command, const Options& options, std::size_t index, const char* what,
                                   int& status) {
    if (options.words.size() <= index) {
        status = usage_error(command, options.words[0] + " needs " + what);
        return std::nullopt;
    }
    if (options.words.size() > index + 1) {
        status = usage_error(command, "unexpected argument \"" + options.words[index + 1] + "\"");
        return std::nullopt;
    }
    return options.words[index];
}

// The verb; `fallback` when none was given.
std::string verb(Options& options, const char* fallback) {
    if (options.words.empty()) options.words.emplace_back(fallback);
    return options.words[0];
}

// Refuses options given to a verb that has no use for them.
std::optional<int> only_with(const Command& command, bool given, const char* option, bool allowed, const char* verbs) {
    if (given && !allowed) return usage_error(command, std::string(option) + " goes with " + verbs);
    return std::nullopt;
}

// ---------------------------------------------------------------------------
// Kill switch

std::string kill_switch_text(const json& kill) {
    if (!flag(kill, "active")) return paint("off", Colour::green);
    std::string scope;
    if (flag(kill, "all")) {
        scope = "all traffic";
    } else {
        if (const auto gateways = joined(member(kill, "gateways")); !gateways.empty()) scope += "gateways " + gateways;
        if (const auto connectors = joined(member(kill, "connectors")); !connectors.empty()) {
            scope += std::string(scope.empty() ? "" : "; ") + "connectors " + connectors;
        }
    }
    std::string out = paint("ON", Colour::red) + " for " + printable(scope);
    if (const auto reason = text(kill, "reason"); !reason.empty()) out += ": " + printable(reason);
    if (const auto actor = text(kill, "actor"); !actor.empty()) out += " (by " + printable(actor) + ")";
    return out;
}

// ---------------------------------------------------------------------------
// Approvals

// Seconds since the request was held, from its `requested` time when it is
// there (an event's age_seconds is as old as the event).
long long approval_age(const json& approval) {
    if (const auto requested = text(approval, "requested"); !requested.empty()) {
        const auto now = store::Clock::now();
        if (const auto at = store::parse_time(requested, now)) {
            return std::chrono::duration_cast<std::chrono::seconds>(now - *at).count();
        }
    }
    return number(approval, "age_seconds");
}

std::string parameters_text(const json& parameters) {
    if (parameters.is_string()) {  // JSON text, as the proxy keeps it
        const auto parsed = json::parse(parameters.get<std::string>(), nullptr, false);
        if (!parsed.is_discarded()) return parameters_text(parsed);
        return parameters.get<std::string>();
    }
    if (!parameters.is_object()) return parameters.is_null() ? "" : dump(parameters);
    std::string out;
    for (const auto& [key, value] : parameters.items()) {
        if (!out.empty()) out += "  ";
        out += key + "=" + (value.is_string() ? value.get<std::string>() : dump(value));
    }
    return out;
}

void print_approval(const json& approval) {
    std::printf("%s %s\n", paint("approval", Colour::bold).c_str(), printable(text(approval, "id")).c_str());
    field("gateway", text(approval, "gateway"));
    field("agent", text(approval, "agent"));
    field("connector", text(approval, "connector"));
    field("action", text(approval, "action"), Colour::bold);
    const auto risk = text(approval, "risk");
    field("risk", risk, risk_colour(risk));
    field("parameters", parameters_text(member(approval, "parameters")));
    field("reason", text(approval, "reason"));
    const auto age = approval_age(approval);
    std::string when = duration(age) + " ago";
    if (const auto timeout = number(approval, "timeout_seconds"); timeout > 0) {
        when += timeout > age ? ", refused in " + duration(timeout - age) + " unless answered" : ", timing out";
    }
    field("held", when);
}

void print_approvals(const json& approvals) {
    Table table({{"ID", 0}, {"GATEWAY"}, {"AGENT"}, {"ACTION"}, {"RISK", 10}, {"AGE", 10}, {"REASON", 48}});
    for (const auto& approval : approvals) {
        const auto risk = text(approval, "risk");
        table.add({{text(approval, "id")},
                   {text(approval, "gateway")},
                   {text(approval, "agent")},
                   {text(approval, "action")},
                   {risk, risk_colour(risk)},
                   {duration(approval_age(approval))},
                   {text(approval, "reason")}});
    }
    table.print();
}

json answer_body(const Options& options) {
    json body = json::object();
    if (options.note) body["note"] = *options.note;
    return body;
}

// Events read on a thread of their own, so the interactive watch can wait on
// the keyboard, the events and signals at once (poll on the eventfd). The
// stream reconnects by itself; its notices come as events "tf.notice", and a
// refused reconnection as the failure of a batch.
class EventPump {
public:
    EventPump() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
    EventPump(const EventPump&) = delete;
    EventPump& operator=(const EventPump&) = delete;
    ~EventPump() {
        if (stream_) stream_->interrupt();
        if (thread_.joinable()) thread_.join();
    }

    void start(std::unique_ptr<FollowStream> stream) {
        stream_ = std::move(stream);
        thread_ = std::thread([this] { run(); });
    }
    [[nodiscard]] int fd() const { return wake_.get(); }

    // From any thread.
    void push(SseEvent event) {
        const std::lock_guard lock(mutex_);
        events_.push_back(std::move(event));
        notify();
    }

    struct Batch {
        std::vector<SseEvent> events;
        std::exception_ptr failure;  // the daemon refused to let the stream go on
    };
    Batch take() {
        std::uint64_t count = 0;
        while (::read(wake_.get(), &count, sizeof count) > 0) {
        }
        const std::lock_guard lock(mutex_);
        Batch batch{std::move(events_), failure_};
        events_.clear();
        return batch;
    }

private:
    void run() {
        try {
            while (auto event = stream_->next()) push(std::move(*event));
        } catch (...) {
            const std::lock_guard lock(mutex_);
            failure_ = std::current_exception();
            notify();
        }
    }
    void notify() const {
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto ignored = ::write(wake_.get(), &one, sizeof one);
    }

    UniqueFd wake_;
    std::mutex mutex_;
    std::vector<SseEvent> events_;
    std::exception_ptr failure_;
    std::unique_ptr<FollowStream> stream_;
    std::thread thread_;
};

// The terminal without line buffering and echo while this lives, so one key
// is one answer; restored however the scope is left.
class RawTerminal {
public:
    explicit RawTerminal(int fd) : fd_(fd) {
        if (::tcgetattr(fd_, &saved_) != 0) throw std::runtime_error(std::string("tcgetattr: ") + std::strerror(errno));
        termios raw = saved_;
        raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (::tcsetattr(fd_, TCSANOW, &raw) != 0) {
            throw std::runtime_error(std::string("tcsetattr: ") + std::strerror(errno));
        }
    }
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    ~RawTerminal() { ::tcsetattr(fd_, TCSANOW, &saved_); }

private:
    int fd_;
    termios saved_{};
};

// SIGINT, SIGTERM and SIGHUP arrive on a signalfd while this lives, so they
// end the watch through the destructors (which restore the terminal) rather
// than kill tf with the terminal left raw.
class SignalsAsFd {
public:
    SignalsAsFd() {
        sigemptyset(&set_);
        for (const int number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, number);
        ::sigprocmask(SIG_BLOCK, &set_, &previous_);
        fd_ = UniqueFd(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
    }
    SignalsAsFd(const SignalsAsFd&) = delete;
    SignalsAsFd& operator=(const SignalsAsFd&) = delete;
    ~SignalsAsFd() { ::sigprocmask(SIG_SETMASK, &previous_, nullptr); }
    [[nodiscard]] int fd() const { return fd_.get(); }

private:
    sigset_t set_{};
    sigset_t previous_{};
    UniqueFd fd_;
};

constexpr const char* kWatchTypes = "/v1/events?types=approval.requested,approval.resolved";

// The pending requests as one event "approval.list" ({"approvals": [..]}):
// at the start, and again after each reconnection (what was missed).
std::vector<SseEvent> list_approvals(const ApiClient& client, bool /*reconnected*/) {
    SseEvent list;
    list.type = "approval.list";
    list.data = dump(json_of(client.get("/v1/approvals")));
    return {list};
}

// What became of a request shown for an answer: {"approved", "expired", "actor", "note"}.
std::string resolution_text(const json& resolved) {
    if (flag(resolved, "expired")) return "timed out: the request was refused";
    std::string out = flag(resolved, "approved") ? "approved elsewhere" : "denied elsewhere";
    if (const auto actor = text(resolved, "actor"); !actor.empty()) out += " by " + printable(actor);
    if (const auto note = text(resolved, "note"); !note.empty()) out += ": " + printable(note);
    return out;
}

// Without a terminal: JSON Lines for a program to read.
int watch_lines(const ApiClient& client) {
    FollowStream stream(client.socket(), kWatchTypes, list_approvals);
    stream.open();
    std::set<std::string> listed;  // pending as last listed: their approval.requested is not printed again
    while (auto event = stream.next()) {
        auto data = event_data(*event);
        if (event->type == "approval.list") {
            for (const auto& approval : member(data, "approvals")) {
                listed.insert(text(approval, "id"));
                std::puts(dump(json{{"event", "approval.pending"}, {"data", approval}}).c_str());
            }
        } else {
            const auto id = text(data, "id");
            if (event->type == "approval.requested" && listed.contains(id)) continue;
            if (event->type == "approval.resolved") listed.erase(id);
            std::puts(dump(json{{"event", event->type}, {"id", event->id}, {"data", std::move(data)}}).c_str());
        }
        std::fflush(stdout);  // each line as it happens, for a pipe
    }
    return kExitOk;  // not reached: only interrupt() ends a FollowStream
}

// On a terminal: one pending request at a time, one key per answer.
// One piece over 100 lines: one loop over the event stream, the keyboard and the signal pipe, whose shared state (the
// request shown, the answer typed) is its locals. NOLINTNEXTLINE(readability-function-size)
int watch_terminal(const ApiClient& client, const Options& options) {
    EventPump pump;
    auto stream =
        std::make_unique<FollowStream>(client.socket(), kWatchTypes, list_approvals, [&pump](const std::string& line) {
            SseEvent notice;
            notice.type = "tf.notice";
            notice.data = line;
            pump.push(std::move(notice));
        });
    stream->open();
    const auto first = stream->next();  // the pending list, taken by open()

    std::deque<json> queue;
    std::set<std::string> known;  // queued, shown or skipped
    std::optional<json> current;
    const auto prompt = [] {
        std::printf("%s ", paint("[a]pprove [d]eny [s]kip [q]uit?", Colour::bold).c_str());
        std::fflush(stdout);
    };
    // The pending list: new requests are queued; those no longer pending
    // (answered or timed out while tf was away) are dropped.
    const auto take_list = [&](const json& list) {
        std::set<std::string> pending;
        std::size_t added = 0;
        for (const auto& approval : member(list, "approvals")) {
            const auto id = text(approval, "id");
            pending.insert(id);
            if (known.insert(id).second) {
                queue.push_back(approval);
                ++added;
            }
        }
        std::erase_if(queue, [&pending](const json& queued) { return !pending.contains(text(queued, "id")); });
        if (current && !pending.contains(text(*current, "id"))) {
            std::printf("\n%s\n",
                        paint("answered elsewhere or timed out while tf was reconnecting", Colour::yellow).c_str());
            current.reset();
        } else if (current && added > 0) {
            std::printf("\n%s\n", paint("(more requests are waiting)", Colour::dim).c_str());
            prompt();
        }
    };
    if (first) take_list(event_data(*first));

    const SignalsAsFd signals;
    const RawTerminal terminal(STDIN_FILENO);
    pump.start(std::move(stream));

    std::printf("Watching for approval requests on %s. Keys: %s approve, %s deny, %s skip, %s quit.\n",
                printable(client.socket_path()).c_str(), paint("a", Colour::bold).c_str(),
                paint("d", Colour::bold).c_str(), paint("s", Colour::bold).c_str(), paint("q", Colour::bold).c_str());
    bool said_waiting = false;
    const auto answer = [&](bool approve) {
        const auto id = text(*current, "id");
        ApiResponse response;
        try {
            response =
                client.post("/v1/approvals/" + url_encode(id) + (approve ? "/approve" : "/deny"), answer_body(options));
        } catch (const ApiUnreachable& failure) {  // the stream reconnects and lists what is still pending
            std::putchar('\n');
            std::fflush(stdout);
            std::fprintf(stderr, "tf: %s\n", failure.what());
            return;
        }
        if (response.ok()) {
            std::printf("%s\n",
                        approve ? paint("approved", Colour::green).c_str() : paint("denied", Colour::red).c_str());
        } else {
            std::putchar('\n');
            std::fflush(stdout);
            print_api_error(response);
        }
    };
    for (;;) {
        if (!current && !queue.empty()) {
            current = std::move(queue.front());
            queue.pop_front();
            std::putchar('\n');
            print_approval(*current);
            if (!queue.empty()) std::printf("  (%zu more waiting)\n", queue.size());
            prompt();
            said_waiting = false;
        } else if (!current && !said_waiting) {
            std::printf("%s\n", paint("No request is waiting; new ones appear here.", Colour::dim).c_str());
            std::fflush(stdout);
            said_waiting = true;
        }
        std::array<pollfd, 3> ready{{{STDIN_FILENO, POLLIN, 0}, {pump.fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}}};
        if (::poll(ready.data(), ready.size(), -1) < 0) {
            if (errno == EINTR) continue;
            throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
        }
        if ((ready[2].revents & POLLIN) != 0) {
            // Taken here, so it is not delivered again when the mask is restored.
            signalfd_siginfo info{};
            const auto got = ::read(signals.fd(), &info, sizeof info);
            std::putchar('\n');
            return 128 + (got == sizeof info ? static_cast<int>(info.ssi_signo) : SIGINT);
        }
        if ((ready[1].revents & POLLIN) != 0) {
            auto batch = pump.take();
            for (const auto& event : batch.events) {
                if (event.type == "tf.notice") {
                    std::putchar('\n');
                    std::fflush(stdout);
                    std::fprintf(stderr, "%s\n", printable(event.data).c_str());
                    if (current) prompt();
                    continue;
                }
                if (event.type == "approval.list") {
                    take_list(event_data(event));
                    continue;
                }
                const auto data = event_data(event);
                const auto id = text(data, "id");
                if (event.type == "approval.requested" && known.insert(id).second) {
                    queue.push_back(data);
                    if (current) {
                        std::printf("\n%s\n", paint("(one more request is waiting)", Colour::dim).c_str());
                        prompt();
                    }
                } else if (event.type == "approval.resolved") {
                    if (current && text(*current, "id") == id) {
                        std::printf("\n%s\n", paint(resolution_text(data), Colour::yellow).c_str());
                        current.reset();
                    }
                    std::erase_if(queue, [&id](const json& queued) { return text(queued, "id") == id; });
                }
            }
            if (batch.failure) {
                std::putchar('\n');
                std::rethrow_exception(batch.failure);
            }
        }
        if ((ready[0].revents & (POLLIN | POLLHUP)) != 0) {
            char key = 0;
            const auto got = ::read(STDIN_FILENO, &key, 1);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) return kExitOk;  // end of input
            if (got < 0) continue;
            if (key == 'q' || key == 'Q') {
                std::putchar('\n');
                return kExitOk;
            }
            if (!current) continue;
            switch (key) {
                case 'a':
                case 'A':
                    answer(true);
                    current.reset();
                    break;
                case 'd':
                case 'D':
                    answer(false);
                    current.reset();
                    break;
                case 's':
                case 'S':
                    std::printf("%s\n", paint("skipped", Colour::dim).c_str());
                    current.reset();
                    break;
                default:
                    std::printf("\npress a, d, s or q: ");
                    std::fflush(stdout);
                    break;
            }
        }
    }
}

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
    bool add(const json& row) {
        const auto now = store::Clock::now();
        const auto time = store::parse_time(text(row, "time"), now).value_or(now);
        if (!ids_.emplace(text(row, "request_id"), time).second) return false;
        newest_ = std::max(newest_, time);
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

bool matches(const store::LogFilter& filter, const json& row) {
    const std::array<std::pair<const char*, const std::string*>, 5> filters{{
        {"gateway", &filter.gateway},
        {"agent", &filter.agent},
        {"connector", &filter.connector},
        {"action", &filter.action},
        {"decision", &filter.decision},
    }};
    return std::all_of(filters.begin(), filters.end(), [&row](const auto& each) {
        return each.second->empty() || text(row, each.first) == *each.second;
    });
}

int logs(const ApiClient& client, const Options& options, store::Format format) {
    RawOutput raw;
    std::ostream out(&raw);
    SeenRows seen(store::Clock::now());
    const auto history = [&](const ApiClient& asked) {
        store::LogFilter last = options.filter;
        last.limit = options.last.value_or(50);
        const auto count =
            write_log(asked, LogKind::traffic, last, format, out, [&seen](const json& row) { seen.add(row); });
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
    const auto print = [&](const json& row) {
        if (!row.is_object() || !matches(options.filter, row) || !seen.add(row)) return;
        if (format == store::Format::jsonl) {
            out << dump(row) << '\n';
        } else {
            writer.write(traffic_row(row));
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
                            for (const auto& row : member(document, "rows")) print(row);
                            return {};
                        });
    stream.open();
    while (auto event = stream.next()) print(event_data(*event));
    return kExitOk;  // not reached: only interrupt() ends a FollowStream
}

}  // namespace

// ---------------------------------------------------------------------------
// The commands

int status_command(std::span<char*> args) {
    const Command command{"tf status", kStatusUsage, {kJson}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        const auto status = json_of(client.get("/v1/status"));
        if (options.json) {
            print_json(status);
            return kExitOk;
        }
        std::printf("%s %s, up %s (since %s)\n", paint("tameflared", Colour::bold).c_str(),
                    printable(text(status, "version")).c_str(), duration(number(status, "uptime_seconds")).c_str(),
                    printable(text(status, "started")).c_str());
        const auto enforcement = text(status, "enforcement");
        field("enforcement", enforcement == "kernel" ? "kernel (BPF)" : enforcement + " (proxy variables only)",
              enforcement == "kernel" ? Colour::green : Colour::yellow);
        field("gateways", text(status, "gateways"));
        field("agents", text(status, "agents"));
        const auto pending = number(status, "pending_approvals");
        field("pending approvals", std::to_string(pending), pending > 0 ? Colour::yellow : Colour::none);
        std::printf("  %-20s %s\n", "kill switch", kill_switch_text(member(status, "kill_switch")).c_str());
        const auto& counters = member(status, "counters");
        field("connections",
              text(counters, "connections_open") + " open, " + text(counters, "connections_total") + " since start");
        field("requests", text(counters, "requests") + " decided, " + text(counters, "held") + " held now");
        const auto& caller = member(status, "caller");
        field("you", "uid " + text(caller, "uid") + ", role " + text(caller, "role"));
        return kExitOk;
    });
}

namespace {

// tf gateways list: one row per gateway.
void print_gateways(const json& gateways) {
    Table table({{"NAME", 0},
                 {"ENFORCEMENT"},
                 {"CONNECTORS"},
                 {"POLICIES", 8},
                 {"RATE LIMIT", 12},
                 {"APPROVAL TIMEOUT", 16},
                 {"DESCRIPTION", 60}});
    for (const auto& gateway : gateways) {
        const auto& limit = member(gateway, "rate_limit");
        const auto requests = number(limit, "requests");
        const auto level = text(gateway, "enforcement");
        const auto& policies = member(gateway, "policies");
        table.add({{text(gateway, "name")},
                   {level, level_colour(level)},
                   {joined(member(gateway, "connectors"))},
                   {policies.is_array() ? std::to_string(policies.size()) : text(gateway, "policies")},
                   {requests > 0 ? std::to_string(requests) + "/" + duration(number(limit, "window_seconds")) : "none"},
                   {duration(number(gateway, "approval_timeout_seconds"))},
                   {text(gateway, "description")}});
    }
    table.print();
}

// tf gateways show: the gateway, its connectors, policies and tcp rules.
void print_gateway(const json& gateway) {
    std::printf("%s %s\n", paint("gateway", Colour::bold).c_str(), printable(text(gateway, "name")).c_str());
    if (const auto description = text(gateway, "description"); !description.empty()) {
        std::printf("  %s\n", printable(description).c_str());
    }
    const auto level = text(gateway, "enforcement");
    field("enforcement", level, level_colour(level));
    const auto& limit = member(gateway, "rate_limit");
    field("rate limit", number(limit, "requests") > 0
                            ? text(limit, "requests") + " requests per " + duration(number(limit, "window_seconds"))
                            : "none");
    field("approval timeout", duration(number(gateway, "approval_timeout_seconds")));
    field("defined in", text(gateway, "origin"));
    const auto& launch = member(gateway, "launch");
    const auto users = joined(member(launch, "users"));
    const auto groups = joined(member(launch, "groups"));
    if (!users.empty() || !groups.empty()) {
        field("may launch", "users: " + (users.empty() ? "-" : users) + "; groups: " + (groups.empty() ? "-" : groups));
    }
    std::printf("%s\n", paint("connectors", Colour::bold).c_str());
    for (const auto& connector : member(gateway, "connectors")) {
        if (!connector.is_object()) {
            std::printf("  %s\n",
                        printable(connector.is_string() ? connector.get<std::string>() : dump(connector)).c_str());
            continue;
        }
        std::printf("  %s (%s)\n", printable(text(connector, "name")).c_str(),
                    printable(text(connector, "type")).c_str());
        field("  domains", joined(member(connector, "domains")));
        field("  credential", text(connector, "credential"));
        field("  preset", text(connector, "preset"));
        for (const auto& rule : member(connector, "rules")) {
            const auto effect = text(rule, "effect");
            field("  rule", text(rule, "pattern") + " -> " + effect,
                  effect == "deny"    ? Colour::red
                  : effect == "allow" ? Colour::green
                                      : Colour::yellow);
        }
    }
    const auto& policies = member(gateway, "policies");
    if (policies.is_array() && !policies.empty()) {
        std::printf("%s\n", paint("policies", Colour::bold).c_str());
        for (const auto& policy : policies) {
            std::printf("  %s: %s %s\n", printable(text(policy, "name")).c_str(),
                        printable(text(policy, "effect")).c_str(),
                        printable(joined(member(policy, "actions"))).c_str());
            if (const auto reason = text(policy, "reason"); !reason.empty()) field("  reason", reason);
        }
    }
    const auto& tcp = member(gateway, "tcp");
    if (tcp.is_array() && !tcp.empty()) {
        std::printf("%s\n", paint("tcp", Colour::bold).c_str());
        for (const auto& destination : tcp) {
            const auto host = text(destination, "host");
            std::printf("  %s port %s\n", printable(host.empty() ? text(destination, "cidr") : host).c_str(),
                        printable(text(destination, "port")).c_str());
        }
    }
}

}  // namespace

int gateways_command(std::span<char*> args) {
    const Command command{"tf gateways", kGatewaysUsage, {kJson, kQuiet}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "list");
    if (const auto exit = only_with(command, options.quiet, "--quiet", action == "list", "list")) return *exit;
    int status = kExitOk;
    if (action == "list") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/gateways"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto& gateways = member(document, "gateways");
            if (options.quiet) {
                for (const auto& gateway : gateways) std::puts(printable(text(gateway, "name")).c_str());
                return kExitOk;
            }
            print_gateways(gateways);
            return kExitOk;
        });
    }
    if (action == "show") {
        const auto name = operand(command, options, 1, "a gateway name", status);
        if (!name) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto gateway = json_of(client.get("/v1/gateways/" + url_encode(*name)));
            if (options.json) {
                print_json(gateway);
                return kExitOk;
            }
            print_gateway(gateway);
            return kExitOk;
        });
    }
    if (action == "set-enforcement") {
        if (options.words.size() != 3) {
            return usage_error(command,
                               "set-enforcement needs a gateway name and a level (monitor, soft, full or default)");
        }
        const auto& name = options.words[1];
        const auto& level = options.words[2];
        if (level != "monitor" && level != "soft" && level != "full" && level != "default") {
            return usage_error(command,
                               "\"" + level + "\" is not an enforcement level: give monitor, soft, full or default");
        }
        return with_client(command, options, [&](const ApiClient& client) {
            const auto gateway =
                json_of(client.put("/v1/gateways/" + url_encode(name) + "/enforcement", json{{"level", level}}));
            if (options.json) {
                print_json(gateway);
                return kExitOk;
            }
            const auto now = text(gateway, "enforcement").empty() ? level : text(gateway, "enforcement");
            std::printf("gateway %s: enforcement %s\n", printable(name).c_str(),
                        paint(printable(now), level_colour(now)).c_str());
            return kExitOk;
        });
    }
    return usage_error(command, "unknown sub-command \"" + action + "\": give list, show or set-enforcement");
}

int reload_command(std::span<char*> args) {
    const Command command{"tf reload", kReloadUsage, {kJson}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        const auto response = client.post("/v1/reload");
        if (options.json && !response.json.is_null()) print_json(response.json);
        if (!response.ok()) {
            print_api_error(response);
            // Every error, with its file and place: from the refusal, or else
            // from a check of the same files.
            json errors = member(response.json, "errors");
            if (!errors.is_array() && response.error_code() == "config_invalid") {
                errors = member(client.post("/v1/config/check").json, "errors");
            }
            for (const auto& error : errors) {
                std::string where = text(error, "file");
                if (const auto pointer = text(error, "pointer"); !pointer.empty()) where += " " + pointer;
                std::fprintf(stderr, "  %s: %s\n", printable(where).c_str(), printable(text(error, "message")).c_str());
                if (const auto hint = text(error, "hint"); !hint.empty()) {
                    std::fprintf(stderr, "    hint: %s\n", printable(hint).c_str());
                }
            }
            return kExitFailed;
        }
        if (!options.json) std::printf("reloaded: %s\n", printable(text(response.json, "summary")).c_str());
        return kExitOk;
    });
}

int agents_command(std::span<char*> args) {
    const Command command{"tf agents", kAgentsUsage, {kJson, kQuiet}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "list");
    if (const auto exit = only_with(command, options.quiet, "--quiet", action == "list", "list")) return *exit;
    int status = kExitOk;
    if (action == "list") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/agents"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto& agents = member(document, "agents");
            if (options.quiet) {
                for (const auto& agent : agents) std::puts(printable(text(agent, "id")).c_str());
                return kExitOk;
            }
            if (agents.empty()) {
                std::puts("no agents");
                return kExitOk;
            }
            Table table({{"ID", 0}, {"GATEWAY"}, {"ISOLATION"}, {"PID", 10}, {"UID", 10}, {"KIND", 10}});
            for (const auto& agent : agents) {
                table.add({{text(agent, "id")},
                           {text(agent, "gateway")},
                           {text(agent, "isolation")},
                           {text(agent, "pid")},
                           {text(agent, "uid")},
                           {flag(agent, "enforced_unit") ? "enforced" : "launched"}});
            }
            table.print();
            return kExitOk;
        });
    }
    if (action == "show" || action == "stop") {
        const auto id = operand(command, options, 1, "an agent id", status);
        if (!id) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto target = "/v1/agents/" + url_encode(*id);
            const auto agent = json_of(action == "show" ? client.get(target) : client.post(target + "/stop"));
            if (options.json) {
                print_json(agent);
                return kExitOk;
            }
            if (action == "stop") {
                std::printf("agent %s stopped\n", printable(*id).c_str());
                return kExitOk;
            }
            std::printf("%s %s\n", paint("agent", Colour::bold).c_str(), printable(text(agent, "id")).c_str());
            field("gateway", text(agent, "gateway"));
            field("isolation", text(agent, "isolation"));
            field("pid", text(agent, "pid"));
            field("uid", text(agent, "uid"));
            if (agent.contains("run_uid")) field("runs as uid", text(agent, "run_uid"));
            field("cgroup id", text(agent, "cgroup_id"));
            field("kind", flag(agent, "enforced_unit") ? "an existing cgroup under enforcement (tf enforce)"
                                                       : "launched by tameflared (tf run)");
            return kExitOk;
        });
    }
    return usage_error(command, "unknown sub-command \"" + action + "\": give list, show or stop");
}

int approvals_command(std::span<char*> args) {
    const Command command{"tf approvals", kApprovalsUsage, {kJson, kQuiet, kNote}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "list");
    if (const auto exit = only_with(command, options.quiet, "--quiet", action == "list", "list")) return *exit;
    if (const auto exit =
            only_with(command, options.note.has_value(), "--note",
                      action == "approve" || action == "deny" || action == "watch", "approve, deny or watch")) {
        return *exit;
    }
    int status = kExitOk;
    if (action == "list") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/approvals"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto& approvals = member(document, "approvals");
            if (options.quiet) {
                for (const auto& approval : approvals) std::puts(printable(text(approval, "id")).c_str());
                return kExitOk;
            }
            if (approvals.empty()) {
                std::puts("no pending approvals");
                return kExitOk;
            }
            print_approvals(approvals);
            return kExitOk;
        });
    }
    if (action == "show") {
        const auto id = operand(command, options, 1, "an approval id", status);
        if (!id) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto approval = json_of(client.get("/v1/approvals/" + url_encode(*id)));
            if (options.json) {
                print_json(approval);
            } else {
                print_approval(approval);
            }
            return kExitOk;
        });
    }
    if (action == "approve" || action == "deny") {
        const auto id = operand(command, options, 1, "an approval id", status);
        if (!id) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto result =
                json_of(client.post("/v1/approvals/" + url_encode(*id) + "/" + action, answer_body(options)));
            if (options.json) {
                print_json(result);
            } else {
                std::printf("%s %s\n",
                            action == "approve" ? paint("approved", Colour::green).c_str()
                                                : paint("denied", Colour::red).c_str(),
                            printable(*id).c_str());
            }
            return kExitOk;
        });
    }
    if (action == "watch") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        const bool terminal = ::isatty(STDIN_FILENO) == 1 && ::isatty(STDOUT_FILENO) == 1 && !options.json;
        return with_client(command, options, [&](const ApiClient& client) {
            return terminal ? watch_terminal(client, options) : watch_lines(client);
        });
    }
    return usage_error(command, "unknown sub-command \"" + action + "\": give list, show, approve, deny or watch");
}

int kill_switch_command(std::span<char*> args) {
    const Command command{"tf kill-switch", kKillSwitchUsage, {kJson, kScope, kReason}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "show");
    if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
    if (action != "show" && action != "on" && action != "off") {
        return usage_error(command, "unknown sub-command \"" + action + "\": give show, on or off");
    }
    const bool change = action != "show";
    if (const auto exit = only_with(command, options.scope.has_value(), "--scope", change, "on or off")) return *exit;
    if (const auto exit = only_with(command, options.reason.has_value(), "--reason", change, "on or off")) return *exit;
    const std::string scope = options.scope.value_or("all");
    const auto colon = scope.find(':');
    const auto kind = scope.substr(0, colon);
    const bool valid_scope = scope == "all" || ((kind == "gateway" || kind == "connector") &&
                                                colon != std::string::npos && colon + 1 < scope.size());
    if (!valid_scope) {
        return usage_error(command,
                           "--scope \"" + scope + "\" is not a scope: give all, gateway:NAME or connector:NAME");
    }
    return with_client(command, options, [&](const ApiClient& client) {
        json body{{"active", action == "on"}, {"scope", scope}};
        if (options.reason) body["reason"] = *options.reason;
        const auto kill = json_of(change ? client.put("/v1/kill-switch", body) : client.get("/v1/kill-switch"));
        if (options.json) {
            print_json(kill);
        } else {
            std::printf("kill switch %s\n", kill_switch_text(kill).c_str());
        }
        return kExitOk;
    });
}

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

int metrics_command(std::span<char*> args) {
    const Command command{"tf metrics", kMetricsUsage, {}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        RawOutput out;
        require_ok(client.stream("/metrics", [&out](std::string_view piece) {
            out.write(piece);
            return true;
        }));
        return kExitOk;
    });
}

}  // namespace tameflare::cli
