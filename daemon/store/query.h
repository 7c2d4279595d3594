// Reading the logs back: filtered queries over the traffic and audit logs and
// their export as CSV and JSON Lines. Works on any Database connection (the
// daemon's reader, or `tf` opening the file read-only).
#pragma once

#include "daemon/store/audit.h"
#include "daemon/store/store.h"

#include "common/error.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tameflare::store {

struct LogFilter {
    std::optional<Clock::time_point> since;  // inclusive
    std::optional<Clock::time_point> until;  // exclusive
    std::string gateway;                     // each: empty = any
    std::string agent;
    std::string connector;  // traffic only
    std::string action;     // traffic: the action; audit: matched against details.action
    std::string decision;   // traffic only
    std::string event;      // audit only: exact name, or a prefix ending in '.' ("action.")
    std::size_t limit = 0;  // 0: all; otherwise the newest `limit`, still printed oldest first
};

// The filters by name, as docs/api.md's Logs names them: one parser for the
// REST query string, D-Bus's a{ss} and tf's flags alike. Both logs take
// since, until (RFC 3339 or an age), gateway, agent, action and limit (a whole
// number, 0 for all); traffic also connector and decision, audit also event.
enum class LogKind { traffic, audit };

// A filter refused: which one, with what value, what is wrong and how to fix
// it. what() is "filter \"NAME\" PROBLEM", as the REST and D-Bus errors say it.
class FilterError : public Error {
public:
    FilterError(std::string name, std::string value, std::string problem, std::string hint = {});
    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] const std::string& value() const noexcept { return value_; }
    [[nodiscard]] const std::string& problem() const noexcept { return problem_; }

private:
    std::string name_, value_, problem_;
};

// "since, until, gateway, agent, ..." : the filters `kind` takes.
std::string log_filter_names(LogKind kind);
// Sets the filter `name` to `value`; an empty value leaves it as it is (any,
// as a form's "since=" means). Throws FilterError for a name this log has no
// filter of, or a value it cannot take.
void set_log_filter(LogFilter& filter, LogKind kind, std::string_view name, const std::string& value,
                    Clock::time_point now);
// A whole filter from name and value pairs, each name at most once.
LogFilter parse_log_filter(const std::vector<std::pair<std::string, std::string>>& pairs, LogKind kind,
                           Clock::time_point now);

struct AuditRecord {
    std::int64_t seq = 0;
    AuditEvent event;
};

// Calls `row` for each match, oldest first (traffic by time, audit by seq).
// Every filter value is a bound parameter. Throws StoreError.
void query_traffic(Database& db, const LogFilter& filter, const std::function<void(const TrafficRow&)>& row);
void query_audit(Database& db, const LogFilter& filter, const std::function<void(const AuditRecord&)>& record);

enum class Format { table, csv, jsonl };

// "table", "csv", "jsonl"; nullopt for anything else.
std::optional<Format> parse_format(std::string_view text);

// Writers for one row at a time; header() prints the CSV or table header
// (nothing for JSON Lines). CSV follows RFC 4180 (CRLF line ends), and a cell
// that a spreadsheet would run as a formula (= + - @ tab CR first) is prefixed
// with '. The table is for a terminal: control characters are shown escaped
// (\x1b), so a logged path cannot drive the terminal, and long cells are cut.
class TrafficWriter {
public:
    TrafficWriter(std::ostream& out, Format format);
    void header();
    void write(const TrafficRow& row);

private:
    std::ostream& out_;
    Format format_;
};

class AuditWriter {
public:
    AuditWriter(std::ostream& out, Format format);
    void header();
    void write(const AuditRecord& record);

private:
    std::ostream& out_;
    Format format_;
};

// RFC 3339 ("2026-11-26T10:00:00Z", "2026-11-26T11:00:00.5+01:00") or an age
// before `now` ("90s", "15m", "2h", "7d"). nullopt when it is neither.
std::optional<Clock::time_point> parse_time(std::string_view text, Clock::time_point now);
std::string format_time(Clock::time_point time);   // RFC 3339 UTC with microseconds
std::string seconds_time(Clock::time_point time);  // RFC 3339 UTC to the second

}  // namespace tameflare::store
