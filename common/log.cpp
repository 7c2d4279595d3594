#include "common/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tameflare {

namespace {

// Queued info/debug records beyond this are dropped (and counted): about
// 8 MiB at worst, a few seconds of a flood the journal cannot keep up with.
constexpr std::size_t kQueueCapacity = 8192;
// Queued records are written in batches: the writer, once woken, lets more
// gather for up to kLinger unless kWakeAt are waiting. A wake-up (a futex and
// a context switch) per request cost the proxy more than writing the record.
constexpr std::size_t kWakeAt = 256;
constexpr std::chrono::milliseconds kLinger{50};

struct Record {
    LogLevel level;
    std::string message;
    std::vector<std::pair<std::string, std::string>> fields;
};

const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::error: return "error";
        case LogLevel::warning: return "warning";
        case LogLevel::notice: return "notice";
        case LogLevel::info: return "info";
        case LogLevel::debug: return "debug";
    }
    return "info";
}

// $TAMEFLARED_LOG_LEVEL: error, warning, notice, info (the default) or debug.
LogLevel threshold() {
    static const LogLevel level = [] {
        const char* given = std::getenv("TAMEFLARED_LOG_LEVEL");
        if (given == nullptr) return LogLevel::info;
        for (const auto candidate :
             {LogLevel::error, LogLevel::warning, LogLevel::notice, LogLevel::info, LogLevel::debug}) {
            if (std::strcmp(given, level_name(candidate)) == 0) return candidate;
        }
        return LogLevel::info;
    }();
    return level;
}

// systemd.exec(5): $JOURNAL_STREAM is "DEVICE:INODE" of the stream the
// journal reads; when stderr is that stream, the native protocol keeps fields.
bool stderr_is_journal() {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return false;
    unsigned long long device = 0;
    unsigned long long inode = 0;
    if (std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
    struct stat status {};
    if (::fstat(STDERR_FILENO, &status) != 0) return false;
    return status.st_dev == device && status.st_ino == inode;
}

// Appends the record's line to `line`.
void format_line(const Record& record, std::string& line) {
    line += level_name(record.level);
    line += ": ";
    line += record.message;
    for (const auto& [key, value] : record.fields) {
        if (key == "MESSAGE_ID") continue;
        line += ' ';
        line += key;
        line += '=';
        const bool quote = value.empty() || value.find_first_of(" \"=") != std::string::npos;
        if (quote) line += '"';
        for (const char c : value) {
            if (c == '"' || c == '\\') line += '\\';
            line += (c == '\n') ? ' ' : c;
        }
        if (quote) line += '"';
    }
    line += '\n';
}

void write_stderr(const Record& record) {
    std::string line;
    format_line(record, line);
    std::fputs(line.c_str(), stderr);
}

bool write_journal(const Record& record) {
    std::vector<std::string> items;
    items.reserve(record.fields.size() + 3);
    items.push_back("MESSAGE=" + record.message);
    items.push_back("PRIORITY=" + std::to_string(static_cast<int>(record.level)));
    items.emplace_back("SYSLOG_IDENTIFIER=tameflared");
    for (const auto& [key, value] : record.fields) {
        if (value.empty()) continue;  // absent rather than empty: AGENT= only where there is one
        items.push_back(key + "=" + value);
    }
    std::vector<iovec> vector;
    vector.reserve(items.size());
    for (auto& item : items) vector.push_back(iovec{item.data(), item.size()});
    return sd_journal_sendv(vector.data(), static_cast<int>(vector.size())) >= 0;
}

class Writer {
public:
    Writer() : journal_(stderr_is_journal()) {}
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    ~Writer() {
        {
            const std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
        flush();
    }

    [[nodiscard]] bool journal() const { return journal_; }
    [[nodiscard]] std::uint64_t dropped() const { return dropped_total_.load(); }

    void queue(Record record) {
        bool notify = false;
        {
            const std::lock_guard lock(mutex_);
            if (queue_.size() >= kQueueCapacity) {
                ++dropped_;
                dropped_total_.fetch_add(1);
                return;
            }
            queue_.push_back(std::move(record));
            if (!thread_.joinable() && !stopping_) thread_ = std::thread([this] { run(); });
            notify = (idle_ && queue_.size() == 1) || queue_.size() == kWakeAt;
        }
        if (notify) wake_.notify_one();
    }

    // Written now, after what was queued before it.
    void write_now(const Record& record) {
        const std::lock_guard output(output_mutex_);
        drain();
        emit(record);
        std::fflush(stderr);
    }

    void flush() {
        const std::lock_guard output(output_mutex_);
        drain();
        std::fflush(stderr);
    }

private:
    void run() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            idle_ = true;
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            idle_ = false;
            wake_.wait_for(lock, kLinger, [this] { return stopping_ || queue_.size() >= kWakeAt; });
            lock.unlock();
            {
                const std::lock_guard output(output_mutex_);
                drain();
            }
            lock.lock();
        }
    }

    // With output_mutex_ held.
    void drain() {
        std::deque<Record> batch;
        std::uint64_t dropped = 0;
        {
            const std::lock_guard lock(mutex_);
            batch.swap(queue_);
            dropped = dropped_;
            dropped_ = 0;
        }
        std::string lines;  // one write for the batch's plain lines (stderr is unbuffered)
        for (const auto& record : batch) {
            if (journal_ && write_journal(record)) continue;
            format_line(record, lines);
        }
        if (!lines.empty()) std::fputs(lines.c_str(), stderr);
        if (dropped != 0) {
            emit(Record{
                LogLevel::warning,
                std::to_string(dropped) + " log records dropped: the journal did not keep up (the traffic log in the "
                                          "database has every request)",
                {{"MESSAGE_ID", std::string(message_id::records_dropped)}, {"DROPPED", std::to_string(dropped)}}});
        }
    }

    void emit(const Record& record) {
        if (journal_ && write_journal(record)) return;
        write_stderr(record);
    }

    const bool journal_;
    std::mutex output_mutex_;  // one writer of the output at a time, in order
    std::mutex mutex_;         // the queue
    std::condition_variable wake_;
    std::deque<Record> queue_;
    std::uint64_t dropped_ = 0;  // since the last report
    std::atomic<std::uint64_t> dropped_total_{0};
    bool stopping_ = false;
    bool idle_ = false;  // the writer waits for a first record (not lingering)
    std::thread thread_;
};

Writer& writer() {
    static Writer instance;
    return instance;
}

Record make_record(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
    Record record{level, std::string(message), {}};
    record.fields.reserve(fields.size());
    for (const auto& [key, value] : fields) record.fields.emplace_back(key, value);
    return record;
}

}  // namespace

void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
    if (level > threshold()) return;
    if (level <= LogLevel::notice) {
        writer().write_now(make_record(level, message, fields));
    } else {
        writer().queue(make_record(level, message, fields));
    }
}

void log_queued(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
    if (level > threshold()) return;
    writer().queue(make_record(level, message, fields));
}

void flush_log() {
    writer().flush();
}

std::uint64_t dropped_log_records() {
    return writer().dropped();
}

bool logging_to_journal() {
    return writer().journal();
}

}  // namespace tameflare
