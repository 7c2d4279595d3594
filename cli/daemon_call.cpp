#include "cli/daemon_call.h"

#include "cli/api_model.h"
#include "cli/commands.h"
#include "cli/output.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <stdexcept>
#include <utility>

namespace tameflare::cli {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kFirstDelay = 200ms;
constexpr auto kLongestDelay = 5000ms;

void to_stderr(const std::string& line) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", printable(line).c_str());
}

}  // namespace

void print_api_error(const ApiResponse& response) {
    std::fprintf(stderr, "tf: %s\n", printable(response.error_message()).c_str());
    if (const auto hint = response.error_hint(); !hint.empty()) {
        std::fprintf(stderr, "hint: %s\n", printable(hint).c_str());
    }
}

int run_with_daemon(const DaemonCall& call, const std::function<int(const ApiClient&)>& body) {
    std::string error;
    const auto socket = api_socket(call.socket, call.config, error);
    if (!socket) {
        std::fprintf(stderr, "%s: %s", call.command.c_str(), error.c_str());
        return kExitUsage;
    }
    try {
        const ApiClient client(*socket);
        return body(client);
    } catch (const ApiUnreachable& failure) {
        std::fflush(stdout);
        std::fprintf(stderr, "tf: %s\n", failure.what());
        if (!call.unreachable_hint.empty()) std::fprintf(stderr, "hint: %s\n", call.unreachable_hint.c_str());
        return kExitUnreachable;
    } catch (const ApiFailure& failure) {
        std::fflush(stdout);
        if (call.json && !failure.response().json.is_null()) print_json(failure.response().json);
        print_api_error(failure.response());
        return kExitFailed;
    } catch (const std::exception& failure) {  // the terminal, poll, an answer of the wrong shape
        std::fflush(stdout);
        std::fprintf(stderr, "%s: %s\n", call.command.c_str(), printable(failure.what()).c_str());
        return kExitFailed;
    }
}

// ---------------------------------------------------------------------------

FollowStream::FollowStream(const ApiSocket& socket, std::string target, Resync resync, Notice notice)
    : interrupter_(std::make_shared<Interrupter>()),
      client_(socket, interrupter_),
      target_(std::move(target)),
      resync_(std::move(resync)),
      notice_(notice ? std::move(notice) : Notice(to_stderr)) {}

FollowStream::~FollowStream() = default;

void FollowStream::open() {
    connect(false);
}

void FollowStream::connect(bool reconnected) {
    // The stream first, then what was missed: an event in between is in one
    // or the other (or both: the callers print each once).
    stream_ = client_.events(target_);
    auto missed = resync_(client_, reconnected);
    for (auto& event : missed) pending_.push_back(std::move(event));
}

std::optional<SseEvent> FollowStream::next() {
    for (;;) {
        if (interrupted()) return std::nullopt;
        if (!pending_.empty()) {
            auto event = std::move(pending_.front());
            pending_.pop_front();
            return event;
        }
        std::string why = "tameflared ended the event stream";
        if (stream_) {
            try {
                if (auto event = stream_->next()) return event;
            } catch (const ApiUnreachable& broken) {
                why = broken.what();
            }
        }
        if (interrupted()) return std::nullopt;
        stream_.reset();
        notice_("tf: " + why + "; reconnecting to " + client_.socket_path() + " (Ctrl-C stops)");
        reconnect();
    }
}

void FollowStream::reconnect() {
    auto delay = std::chrono::milliseconds(kFirstDelay);
    for (;;) {
        if (!wait(delay)) return;
        try {
            connect(true);
            notice_("tf: reconnected to tameflared on " + client_.socket_path());
            return;
        } catch (const ApiUnreachable&) {
            if (interrupted()) return;
        } catch (const ApiFailure& failure) {
            // 503 while it starts or is full: try again; a refusal is final.
            if (failure.response().status < 500) throw;
        }
        stream_.reset();
        delay = std::min(delay * 2, std::chrono::milliseconds(kLongestDelay));
    }
}

bool FollowStream::wait(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, delay, [this] { return interrupted(); });
}

bool FollowStream::interrupted() const {
    return interrupter_->interrupted();
}

void FollowStream::interrupt() {
    interrupter_->interrupt();
    {
        const std::lock_guard lock(mutex_);  // a waiter is either before its check or in the wait
    }
    wake_.notify_all();
}

json event_data(const SseEvent& event) {
    auto data = json::parse(event.data, nullptr, false);
    return data.is_discarded() ? json(event.data) : data;
}

// ---------------------------------------------------------------------------

std::optional<std::string> set_filter_flag(store::LogFilter& filter, LogKind kind, const std::string& name,
                                           const std::string& value) {
    try {
        store::set_log_filter(filter, kind, name, value, store::Clock::now());
    } catch (const store::FilterError& error) {
        return "--" + name + " \"" + value + "\" " + error.problem() +
               (error.hint().empty() ? std::string() : ": " + error.hint());
    }
    return std::nullopt;
}

std::string log_target(LogKind kind, const store::LogFilter& filter, std::string_view format) {
    const bool traffic = kind == LogKind::traffic;
    std::string target = std::string(traffic ? "/v1/traffic" : "/v1/audit") + "?format=" + std::string(format);
    if (filter.limit != 0) target += "&limit=" + std::to_string(filter.limit);
    if (filter.since) target += "&since=" + url_encode(store::format_time(*filter.since));
    if (filter.until) target += "&until=" + url_encode(store::format_time(*filter.until));
    const std::array<std::pair<const char*, const std::string*>, 6> values{{
        {"gateway", &filter.gateway},
        {"agent", &filter.agent},
        {"action", &filter.action},
        {traffic ? "connector" : nullptr, &filter.connector},
        {traffic ? "decision" : nullptr, &filter.decision},
        {traffic ? nullptr : "event", &filter.event},
    }};
    for (const auto& [name, value] : values) {
        if (name != nullptr && !value->empty()) target += std::string("&") + name + "=" + url_encode(*value);
    }
    return target;
}

std::size_t write_log(const ApiClient& client, LogKind kind, const store::LogFilter& filter, store::Format format,
                      std::ostream& out, const std::function<void(const json&)>& seen) {
    std::optional<store::TrafficWriter> traffic;
    std::optional<store::AuditWriter> audit;
    if (format == store::Format::table) {
        if (kind == LogKind::traffic) {
            traffic.emplace(out, format);
            traffic->header();
        } else {
            audit.emplace(out, format);
            audit->header();
        }
    }
    std::size_t count = 0;
    // JSON Lines: one object a line, taken whole.
    std::string partial;
    const auto line = [&](std::string_view text) {
        if (text.empty()) return;
        ++count;
        if (format == store::Format::jsonl) out << text << '\n';
        if (format == store::Format::table || seen) {
            const auto parsed = json::parse(text, nullptr, false);
            if (parsed.is_discarded()) throw std::runtime_error("tameflared sent a log line that is not JSON");
            if (seen) seen(parsed);
            if (traffic) traffic->write(traffic_row_from_json(parsed));
            if (audit) audit->write(audit_record_from_json(parsed));
        }
    };
    // CSV: records end in a line end outside quotes (RFC 4180); the first is the header.
    std::size_t records = 0;
    bool quoted = false;
    const bool csv = format == store::Format::csv;
    const auto response = client.stream(log_target(kind, filter, csv ? "csv" : "jsonl"), [&](std::string_view piece) {
        if (csv) {
            out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
            for (const char c : piece) {
                if (c == '"') quoted = !quoted;
                if (c == '\n' && !quoted) ++records;
            }
            return true;
        }
        partial += piece;
        for (auto end = partial.find('\n'); end != std::string::npos; end = partial.find('\n')) {
            line(std::string_view(partial).substr(0, end));
            partial.erase(0, end + 1);
        }
        return true;
    });
    require_ok(response);
    line(partial);
    out.flush();
    return csv ? (records == 0 ? 0 : records - 1) : count;
}

}  // namespace tameflare::cli
