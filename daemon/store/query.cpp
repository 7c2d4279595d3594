#include "daemon/store/query.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <limits>
#include <utility>
#include <variant>
#include <vector>

namespace tameflare::store {

namespace {

using namespace std::chrono;

// ---------------------------------------------------------------------------
// The WHERE clause: fixed SQL fragments, every value a bound parameter.

class Where {
public:
    void add(std::string_view fragment, std::string value) {
        sql_ += fragment;
        values_.emplace_back(std::move(value));
    }
    void add(std::string_view fragment, std::int64_t value) {
        sql_ += fragment;
        values_.emplace_back(value);
    }
    void add(std::string_view fragment, std::string low, std::string high) {
        sql_ += fragment;
        values_.emplace_back(std::move(low));
        values_.emplace_back(std::move(high));
    }
    [[nodiscard]] const std::string& sql() const { return sql_; }
    // Binds the values from index 1 on; returns the next free index.
    int bind(Statement& statement) const {
        int index = 1;
        for (const auto& value : values_) {
            std::visit([&](const auto& v) { statement.bind(index, v); }, value);
            ++index;
        }
        return index;
    }

private:
    std::string sql_ = " WHERE 1";
    std::vector<std::variant<std::int64_t, std::string>> values_;
};

void add_common(Where& where, const LogFilter& filter) {
    if (filter.since) where.add(" AND time >= ?", to_micros(*filter.since));
    if (filter.until) where.add(" AND time < ?", to_micros(*filter.until));
    if (!filter.gateway.empty()) where.add(" AND gateway = ?", filter.gateway);
    if (!filter.agent.empty()) where.add(" AND agent = ?", filter.agent);
}

std::int64_t sql_limit(std::size_t limit) {
    return static_cast<std::int64_t>(std::min<std::size_t>(limit, std::numeric_limits<std::int64_t>::max()));
}

// All matches in `order` (ascending), or the last `limit` of them, still ascending.
std::string select(std::string_view columns, std::string_view table, const Where& where, std::string_view order,
                   std::string_view order_desc, std::size_t limit) {
    std::string sql = "SELECT ";
    sql += columns;
    sql += " FROM ";
    sql += table;
    sql += where.sql();
    if (limit == 0) {
        sql += " ORDER BY ";
        sql += order;
        return sql;
    }
    sql += " ORDER BY ";
    sql += order_desc;
    sql += " LIMIT ?";
    return "SELECT " + std::string(columns) + " FROM (" + sql + ") ORDER BY " + std::string(order);
}

// ---------------------------------------------------------------------------
// Cells

// CSV (RFC 4180): quoted when it holds a comma, quote, CR or LF, quotes
// doubled; a leading = + - @ tab or CR gets a ' so a spreadsheet shows the
// text instead of running it as a formula (agents choose paths and hosts).
void csv_cell(std::string& line, std::string_view value) {
    const bool formula = !value.empty() && std::string_view("=+-@\t\r").find(value.front()) != std::string_view::npos;
    const bool quoted = value.find_first_of(",\"\r\n") != std::string_view::npos;
    if (quoted) line += '"';
    if (formula) line += '\'';
    for (const char c : value) {
        if (c == '"') line += '"';
        line += c;
    }
    if (quoted) line += '"';
}

void csv_row(std::ostream& out, std::initializer_list<std::string_view> cells) {
    std::string line;
    bool first = true;
    for (const auto cell : cells) {
        if (!first) line += ',';
        first = false;
        csv_cell(line, cell);
    }
    line += "\r\n";
    out << line;
}

void append_escaped(std::string& out, unsigned char byte) {
    static constexpr char kDigits[] = "0123456789abcdef";
    out += "\\x";
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xf];
}

// The length of the valid UTF-8 sequence at `text[at]`, and its code point;
// 0 when the bytes there are not valid UTF-8.
std::pair<std::size_t, char32_t> utf8_at(std::string_view text, std::size_t at) {
    const auto lead = static_cast<unsigned char>(text[at]);
    std::size_t length = 0;
    char32_t code = 0;
    char32_t minimum = 0;
    if (lead < 0x80) return {1, lead};
    if ((lead & 0xe0) == 0xc0) {
        length = 2;
        code = lead & 0x1f;
        minimum = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
        length = 3;
        code = lead & 0x0f;
        minimum = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
        length = 4;
        code = lead & 0x07;
        minimum = 0x10000;
    } else {
        return {0, 0};
    }
    if (at + length > text.size()) return {0, 0};
    for (std::size_t i = 1; i < length; ++i) {
        const auto next = static_cast<unsigned char>(text[at + i]);
        if ((next & 0xc0) != 0x80) return {0, 0};
        code = (code << 6) | (next & 0x3f);
    }
    if (code < minimum || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return {0, 0};
    return {length, code};
}

// A cell for a terminal: control characters (C0, DEL, C1) and bytes that are
// not UTF-8 are shown as \xNN, so a logged value cannot send escape
// sequences; at most `width` characters (0: any), a cut marked with "..".
std::string terminal_cell(std::string_view text, std::size_t width) {
    struct Piece {
        std::string text;
        std::size_t columns;
    };
    std::vector<Piece> pieces;
    std::size_t total = 0;
    for (std::size_t at = 0; at < text.size();) {
        const auto [length, code] = utf8_at(text, at);
        Piece piece;
        if (length == 0 || code < 0x20 || (code >= 0x7f && code < 0xa0)) {
            const std::size_t bytes = length == 0 ? 1 : length;
            for (std::size_t i = 0; i < bytes; ++i)
                append_escaped(piece.text, static_cast<unsigned char>(text[at + i]));
            piece.columns = piece.text.size();
            at += bytes;
        } else {
            piece.text = text.substr(at, length);
            piece.columns = 1;
            at += length;
        }
        total += piece.columns;
        pieces.push_back(std::move(piece));
    }
    const bool cut = width != 0 && total > width;
    const std::size_t room = cut ? (width > 2 ? width - 2 : 0) : total;
    std::string out;
    std::size_t shown = 0;
    for (const auto& piece : pieces) {
        if (shown + piece.columns > room) break;
        out += piece.text;
        shown += piece.columns;
    }
    if (cut) out += "..";
    return out;
}

// Left-aligned in `width` columns (cut to fit), then two spaces.
void table_cell(std::string& line, std::string_view value, std::size_t width) {
    const std::string cell = terminal_cell(value, width);
    line += cell;
    // Columns shown: count the characters (not UTF-8 continuation bytes).
    std::size_t shown = 0;
    for (const char c : cell) {
        if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++shown;
    }
    if (shown < width) line.append(width - shown, ' ');
    line += "  ";
}

std::string human_latency(std::chrono::microseconds latency) {
    std::array<char, 32> text{};
    const auto us = latency.count();
    if (us < 1000) {
        std::snprintf(text.data(), text.size(), "%lldus", static_cast<long long>(us));
    } else if (us < 1000000) {
        std::snprintf(text.data(), text.size(), "%.1fms", static_cast<double>(us) / 1e3);
    } else {
        std::snprintf(text.data(), text.size(), "%.2fs", static_cast<double>(us) / 1e6);
    }
    return text.data();
}

void write_json_line(std::ostream& out, const nlohmann::ordered_json& object) {
    out << object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

struct Column {
    std::string_view name;
    std::size_t width;  // 0: the last column, as wide as it is
};

constexpr std::array kTrafficColumns = {
    Column{"TIME", 20},   Column{"DECISION", 22}, Column{"STATUS", 6}, Column{"GATEWAY", 12}, Column{"AGENT", 12},
    Column{"ACTION", 24}, Column{"METHOD", 7},    Column{"HOST", 24},  Column{"PATH", 36},    Column{"LATENCY", 0},
};

constexpr std::array kAuditColumns = {
    Column{"SEQ", 7},    Column{"TIME", 20},  Column{"EVENT", 26},   Column{"GATEWAY", 12},
    Column{"AGENT", 12}, Column{"ACTOR", 18}, Column{"SUBJECT", 24}, Column{"DETAILS", 0},
};

template <std::size_t N>
void table_row(std::ostream& out, const std::array<Column, N>& columns, const std::array<std::string, N>& cells) {
    std::string line;
    for (std::size_t i = 0; i < N; ++i) {
        const std::string_view cell = cells[i].empty() ? "-" : std::string_view(cells[i]);
        if (columns[i].width == 0) {
            line += terminal_cell(cell, 0);
        } else {
            table_cell(line, cell, columns[i].width);
        }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << '\n';
}

template <std::size_t N>
void table_header(std::ostream& out, const std::array<Column, N>& columns) {
    std::array<std::string, N> names;
    for (std::size_t i = 0; i < N; ++i) names[i] = columns[i].name;
    table_row(out, columns, names);
}

constexpr std::string_view kTrafficSelect =
    "id, time, request_id, gateway, agent, connector, action, method, host, path, decision, reason, status, "
    "request_bytes, response_bytes, latency_us, forwarded, completed";

constexpr std::string_view kAuditSelect = "seq, time, event, gateway, agent, actor, subject, details";

std::optional<int> digits(std::string_view text, std::size_t& at, std::size_t count) {
    if (at + count > text.size()) return std::nullopt;
    int value = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const char c = text[at + i];
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    at += count;
    return value;
}

bool literal(std::string_view text, std::size_t& at, std::string_view choices) {
    if (at >= text.size() || choices.find(text[at]) == std::string_view::npos) return false;
    ++at;
    return true;
}

// The time point for `micros` since the epoch, clamped to what Clock holds.
Clock::time_point clamped(std::int64_t micros) {
    constexpr auto kMax = duration_cast<microseconds>(Clock::duration::max()).count() - 1;
    constexpr auto kMin = duration_cast<microseconds>(Clock::duration::min()).count() + 1;
    return from_micros(std::clamp<std::int64_t>(micros, kMin, kMax));
}

std::optional<Clock::time_point> parse_rfc3339(std::string_view text) {
    std::size_t at = 0;
    const auto year = digits(text, at, 4);
    if (!year || !literal(text, at, "-")) return std::nullopt;
    const auto month = digits(text, at, 2);
    if (!month || !literal(text, at, "-")) return std::nullopt;
    const auto day = digits(text, at, 2);
    if (!day || !literal(text, at, "Tt ")) return std::nullopt;
    const auto hour = digits(text, at, 2);
    if (!hour || !literal(text, at, ":")) return std::nullopt;
    const auto minute = digits(text, at, 2);
    if (!minute || !literal(text, at, ":")) return std::nullopt;
    const auto second = digits(text, at, 2);
    if (!second) return std::nullopt;

    std::int64_t fraction_us = 0;
    if (literal(text, at, ".")) {
        std::size_t count = 0;
        std::int64_t scale = 100000;
        while (at < text.size() && text[at] >= '0' && text[at] <= '9') {
            fraction_us += (text[at] - '0') * scale;  // digits beyond microseconds are dropped
            scale /= 10;
            ++at;
            ++count;
        }
        if (count == 0) return std::nullopt;
    }

    std::int64_t offset_minutes = 0;
    if (!literal(text, at, "Zz")) {
        if (at >= text.size() || (text[at] != '+' && text[at] != '-')) return std::nullopt;
        const int sign = text[at] == '-' ? -1 : 1;
        ++at;
        const auto offset_hours = digits(text, at, 2);
        if (!offset_hours || !literal(text, at, ":")) return std::nullopt;
        const auto offset_mins = digits(text, at, 2);
        if (!offset_mins || *offset_hours > 23 || *offset_mins > 59) return std::nullopt;
        offset_minutes = static_cast<std::int64_t>(sign) * (*offset_hours * 60 + *offset_mins);
    }
    if (at != text.size()) return std::nullopt;

    const year_month_day date{std::chrono::year(*year), std::chrono::month(static_cast<unsigned>(*month)),
                              std::chrono::day(static_cast<unsigned>(*day))};
    // 60: a leap second, as RFC 3339 allows; counted as the next minute's first.
    if (!date.ok() || *hour > 23 || *minute > 59 || *second > 60) return std::nullopt;
    const sys_time<microseconds> local = sys_days(date) + hours(*hour) + minutes(*minute) + seconds(*second) +
                                         microseconds(fraction_us) - minutes(offset_minutes);
    return clamped(local.time_since_epoch().count());
}

std::optional<Clock::time_point> parse_age(std::string_view text, Clock::time_point now) {
    if (text.size() < 2) return std::nullopt;
    std::int64_t unit = 0;
    switch (text.back()) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default: return std::nullopt;
    }
    const std::string_view number = text.substr(0, text.size() - 1);
    if (number.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    std::uint64_t value = 0;
    const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
    // An age of 100,000 years or more reaches before any record: the beginning.
    constexpr std::uint64_t kLongest = 100000ULL * 366 * 86400;
    if (error == std::errc::result_out_of_range || value > kLongest / static_cast<std::uint64_t>(unit)) {
        return Clock::time_point::min();
    }
    if (error != std::errc() || end != number.data() + number.size()) return std::nullopt;
    const auto age = static_cast<std::int64_t>(value) * unit * 1000000;
    return clamped(to_micros(now) - age);
}

}  // namespace

std::string seconds_time(Clock::time_point time) {
    std::string text = format_time(time);  // ...T10:00:00.123456Z
    if (const auto dot = text.rfind('.'); dot != std::string::npos) text.erase(dot, text.size() - dot - 1);
    return text;
}

// ---------------------------------------------------------------------------
// Queries

void query_traffic(Database& db, const LogFilter& filter, const std::function<void(const TrafficRow&)>& row) {
    Where where;
    add_common(where, filter);
    if (!filter.connector.empty()) where.add(" AND connector = ?", filter.connector);
    if (!filter.action.empty()) where.add(" AND action = ?", filter.action);
    if (!filter.decision.empty()) where.add(" AND decision = ?", filter.decision);

    auto statement =
        db.prepare(select(kTrafficSelect, "traffic", where, "time, id", "time DESC, id DESC", filter.limit));
    const int next = where.bind(statement);
    if (filter.limit != 0) statement.bind(next, sql_limit(filter.limit));
    while (statement.step()) {
        TrafficRow r;
        r.time = from_micros(statement.integer(1));
        r.request_id = statement.text(2);
        r.gateway = statement.text(3);
        r.agent = statement.text(4);
        r.connector = statement.text(5);
        r.action = statement.text(6);
        r.method = statement.text(7);
        r.host = statement.text(8);
        r.path = statement.text(9);
        r.decision = statement.text(10);
        r.reason = statement.text(11);
        r.status = static_cast<unsigned>(statement.integer(12));
        r.request_bytes = static_cast<std::uint64_t>(statement.integer(13));
        r.response_bytes = static_cast<std::uint64_t>(statement.integer(14));
        r.latency = microseconds(statement.integer(15));
        r.forwarded = statement.integer(16) != 0;
        r.completed = statement.integer(17) != 0;
        row(r);
    }
}

void query_audit(Database& db, const LogFilter& filter, const std::function<void(const AuditRecord&)>& record) {
    Where where;
    add_common(where, filter);
    if (!filter.event.empty()) {
        if (filter.event.back() == '.') {
            // Every name that starts with the prefix sorts in [prefix, prefix with its '.' raised to '/').
            std::string high = filter.event;
            high.back() = '/';
            where.add(" AND event >= ? AND event < ?", filter.event, std::move(high));
        } else {
            where.add(" AND event = ?", filter.event);
        }
    }
    if (!filter.action.empty()) {
        where.add(" AND (CASE WHEN json_valid(details) THEN json_extract(details, '$.action') END) = ?", filter.action);
    }

    auto statement = db.prepare(select(kAuditSelect, "audit", where, "seq", "seq DESC", filter.limit));
    const int next = where.bind(statement);
    if (filter.limit != 0) statement.bind(next, sql_limit(filter.limit));
    while (statement.step()) {
        AuditRecord r;
        r.seq = statement.integer(0);
        r.event.time = from_micros(statement.integer(1));
        r.event.event = statement.text(2);
        r.event.gateway = statement.text(3);
        r.event.agent = statement.text(4);
        r.event.actor = statement.text(5);
        r.event.subject = statement.text(6);
        r.event.details = statement.text(7);
        record(r);
    }
}

std::optional<Format> parse_format(std::string_view text) {
    if (text == "table") return Format::table;
    if (text == "csv") return Format::csv;
    if (text == "jsonl") return Format::jsonl;
    return std::nullopt;
}

// ---------------------------------------------------------------------------
// Writers

TrafficWriter::TrafficWriter(std::ostream& out, Format format) : out_(out), format_(format) {}

void TrafficWriter::header() {
    if (format_ == Format::table) table_header(out_, kTrafficColumns);
    if (format_ == Format::csv) {
        csv_row(out_,
                {"time", "request_id", "gateway", "agent", "connector", "action", "method", "host", "path", "decision",
                 "reason", "status", "request_bytes", "response_bytes", "latency_us", "forwarded", "completed"});
    }
}

void TrafficWriter::write(const TrafficRow& row) {
    switch (format_) {
        case Format::table: {
            const bool known = row.completed && row.status != 0;
            table_row(
                out_, kTrafficColumns,
                {seconds_time(row.time), row.decision, known ? std::to_string(row.status) : "-", row.gateway, row.agent,
                 row.action, row.method, row.host, row.path, row.completed ? human_latency(row.latency) : "-"});
            break;
        }
        case Format::csv:
            csv_row(out_, {format_time(row.time), row.request_id, row.gateway, row.agent, row.connector, row.action,
                           row.method, row.host, row.path, row.decision, row.reason, std::to_string(row.status),
                           std::to_string(row.request_bytes), std::to_string(row.response_bytes),
                           std::to_string(row.latency.count()), row.forwarded ? "true" : "false",
                           row.completed ? "true" : "false"});
            break;
        case Format::jsonl:
            write_json_line(out_, {
                                      {"time", format_time(row.time)},
                                      {"request_id", row.request_id},
                                      {"gateway", row.gateway},
                                      {"agent", row.agent},
                                      {"connector", row.connector},
                                      {"action", row.action},
                                      {"method", row.method},
                                      {"host", row.host},
                                      {"path", row.path},
                                      {"decision", row.decision},
                                      {"reason", row.reason},
                                      {"status", row.status},
                                      {"request_bytes", row.request_bytes},
                                      {"response_bytes", row.response_bytes},
                                      {"latency_us", row.latency.count()},
                                      {"forwarded", row.forwarded},
                                      {"completed", row.completed},
                                  });
            break;
    }
}

AuditWriter::AuditWriter(std::ostream& out, Format format) : out_(out), format_(format) {}

void AuditWriter::header() {
    if (format_ == Format::table) table_header(out_, kAuditColumns);
    if (format_ == Format::csv) {
        csv_row(out_, {"seq", "time", "event", "gateway", "agent", "actor", "subject", "details"});
    }
}

void AuditWriter::write(const AuditRecord& record) {
    const auto& event = record.event;
    switch (format_) {
        case Format::table:
            table_row(out_, kAuditColumns,
                      {std::to_string(record.seq), seconds_time(event.time), event.event, event.gateway, event.agent,
                       event.actor, event.subject, event.details});
            break;
        case Format::csv:
            csv_row(out_, {std::to_string(record.seq), format_time(event.time), event.event, event.gateway, event.agent,
                           event.actor, event.subject, event.details});
            break;
        case Format::jsonl: {
            // The details as the object they are; kept as text if a record holds something else.
            auto details = nlohmann::ordered_json::parse(event.details, nullptr, false);
            if (details.is_discarded()) details = event.details;
            write_json_line(out_, {
                                      {"seq", record.seq},
                                      {"time", format_time(event.time)},
                                      {"event", event.event},
                                      {"gateway", event.gateway},
                                      {"agent", event.agent},
                                      {"actor", event.actor},
                                      {"subject", event.subject},
                                      {"details", std::move(details)},
                                  });
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// Times

std::optional<Clock::time_point> parse_time(std::string_view text, Clock::time_point now) {
    if (text.empty()) return std::nullopt;
    if (text.size() <= 24 && text.find_first_of("-:") == std::string_view::npos) return parse_age(text, now);
    return parse_rfc3339(text);
}

std::string format_time(Clock::time_point time) {
    const auto micros = floor<microseconds>(time);
    const auto day = floor<days>(micros);
    const year_month_day date{day};
    const hh_mm_ss clock{micros - day};
    std::array<char, 48> text{};
    std::snprintf(text.data(), text.size(), "%04d-%02u-%02uT%02d:%02d:%02d.%06lldZ", static_cast<int>(date.year()),
                  static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                  static_cast<int>(clock.hours().count()), static_cast<int>(clock.minutes().count()),
                  static_cast<int>(clock.seconds().count()), static_cast<long long>(clock.subseconds().count()));
    return text.data();
}

}  // namespace tameflare::store
