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

// ---------------------------------------------------------------------------
// Approvals

// Seconds since the request was held, from its `requested` time when it is
// there (an event's age_seconds is as old as the event).
long long approval_age(const ApprovalView& approval) {
    if (!approval.requested.empty()) {
        const auto now = store::Clock::now();
        if (const auto at = store::parse_time(approval.requested, now)) {
            return std::chrono::duration_cast<std::chrono::seconds>(now - *at).count();
        }
    }
    return approval.age_seconds;
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

void print_approval(const ApprovalView& approval) {
    std::printf("%s %s\n", paint("approval", Colour::bold).c_str(), printable(approval.id).c_str());
    field("gateway", approval.gateway);
    field("agent", approval.agent);
    field("connector", approval.connector);
    field("action", approval.action, Colour::bold);
    field("risk", approval.risk, risk_colour(approval.risk));
    field("parameters", parameters_text(approval.parameters));
    field("reason", approval.reason);
    const auto age = approval_age(approval);
    std::string when = duration(age) + " ago";
    if (const auto timeout = approval.timeout_seconds; timeout > 0) {
        when += timeout > age ? ", refused in " + duration(timeout - age) + " unless answered" : ", timing out";
    }
    field("held", when);
}

void print_approvals(const std::vector<ApprovalView>& approvals) {
    Table table({{"ID", 0}, {"GATEWAY"}, {"AGENT"}, {"ACTION"}, {"RISK", 10}, {"AGE", 10}, {"REASON", 48}});
    for (const auto& approval : approvals) {
        table.add({{approval.id},
                   {approval.gateway},
                   {approval.agent},
                   {approval.action},
                   {approval.risk, risk_colour(approval.risk)},
                   {duration(approval_age(approval))},
                   {approval.reason}});
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

// What became of a request shown for an answer.
std::string resolution_text(const ApprovalResolvedView& resolved) {
    if (resolved.expired) return "timed out: the request was refused";
    std::string out = resolved.approved ? "approved elsewhere" : "denied elsewhere";
    if (!resolved.actor.empty()) out += " by " + printable(resolved.actor);
    if (!resolved.note.empty()) out += ": " + printable(resolved.note);
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
            // Each request as the daemon sent it, not as tf reads it.
            for (auto& approval : approval_documents(data)) {
                listed.insert(approval_from_json(approval).id);
                std::puts(dump(json{{"event", "approval.pending"}, {"data", std::move(approval)}}).c_str());
            }
        } else {
            const bool resolved = event->type == "approval.resolved";
            const auto id = resolved ? approval_resolved_from_json(data).id : approval_from_json(data).id;
            if (event->type == "approval.requested" && listed.contains(id)) continue;
            if (resolved) listed.erase(id);
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

    std::deque<ApprovalView> queue;
    std::set<std::string> known;  // queued, shown or skipped
    std::optional<ApprovalView> current;
    const auto prompt = [] {
        std::printf("%s ", paint("[a]pprove [d]eny [s]kip [q]uit?", Colour::bold).c_str());
        std::fflush(stdout);
    };
    // The pending list: new requests are queued; those no longer pending
    // (answered or timed out while tf was away) are dropped.
    const auto take_list = [&](const std::vector<ApprovalView>& list) {
        std::set<std::string> pending;
        std::size_t added = 0;
        for (const auto& approval : list) {
            pending.insert(approval.id);
            if (known.insert(approval.id).second) {
                queue.push_back(approval);
                ++added;
            }
        }
        std::erase_if(queue, [&pending](const ApprovalView& queued) { return !pending.contains(queued.id); });
        if (current && !pending.contains(current->id)) {
            std::printf("\n%s\n",
                        paint("answered elsewhere or timed out while tf was reconnecting", Colour::yellow).c_str());
            current.reset();
        } else if (current && added > 0) {
            std::printf("\n%s\n", paint("(more requests are waiting)", Colour::dim).c_str());
            prompt();
        }
    };
    if (first) take_list(approvals_from_json(event_data(*first)));

    const SignalsAsFd signals;
    const RawTerminal terminal(STDIN_FILENO);
    pump.start(std::move(stream));

    std::printf("Watching for approval requests on %s. Keys: %s approve, %s deny, %s skip, %s quit.\n",
                printable(client.socket_path()).c_str(), paint("a", Colour::bold).c_str(),
                paint("d", Colour::bold).c_str(), paint("s", Colour::bold).c_str(), paint("q", Colour::bold).c_str());
    bool said_waiting = false;
    const auto answer = [&](bool approve) {
        const auto id = current->id;
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
                    take_list(approvals_from_json(event_data(event)));
                    continue;
                }
                const auto data = event_data(event);
                if (event.type == "approval.requested") {
                    auto requested = approval_from_json(data);
                    if (!known.insert(requested.id).second) continue;
                    queue.push_back(std::move(requested));
                    if (current) {
                        std::printf("\n%s\n", paint("(one more request is waiting)", Colour::dim).c_str());
                        prompt();
                    }
                } else if (event.type == "approval.resolved") {
                    const auto resolved = approval_resolved_from_json(data);
                    if (current && current->id == resolved.id) {
                        std::printf("\n%s\n", paint(resolution_text(resolved), Colour::yellow).c_str());
                        current.reset();
                    }
                    std::erase_if(queue, [&resolved](const ApprovalView& queued) { return queued.id == resolved.id; });
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

}  // namespace

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
            const auto approvals = approvals_from_json(document);
            if (options.quiet) {
                for (const auto& approval : approvals) std::puts(printable(approval.id).c_str());
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
                print_approval(approval_from_json(approval));
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

}  // namespace tameflare::cli
