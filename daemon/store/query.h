// Reading the logs back: filtered queries over the traffic and audit logs and
// their export as CSV and JSON Lines. Works on any Database connection (the
// daemon's reader, or `tf` opening the file read-only).
#pragma once

#include "daemon/store/audit.h"
#include "daemon/store/store.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

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
