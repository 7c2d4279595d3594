// Reading the logs back: filters over real SQLite files written by the Store,
// CSV that python's csv module reads back, JSON Lines, and time parsing.
#include "daemon/store/query.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace tameflare::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// 2026-11-26T10:00:00Z
constexpr Clock::time_point kBase = std::chrono::sys_days(std::chrono::year(2026) / 11 / 26) + 10h;

TrafficRow traffic(const std::string& id, std::chrono::seconds offset) {
    TrafficRow row;
    row.time = kBase + offset;
    row.request_id = id;
    row.gateway = "ci";
    row.agent = "agent-1";
    row.connector = "github";
    row.action = "github.repo.read";
    row.method = "GET";
    row.host = "api.github.com";
    row.path = "/repos/o/r";
    row.decision = "allowed";
    row.reason = "rule 1";
    row.status = 200;
    row.request_bytes = 10;
    row.response_bytes = 2000;
    row.latency = 1234us;
    row.forwarded = true;
    return row;
}

AuditEvent audit_event(const std::string& name, std::chrono::seconds offset, const std::string& details) {
    AuditEvent event;
    event.time = kBase + offset;
    event.event = name;
    event.gateway = "ci";
    event.agent = "agent-1";
    event.actor = "tameflared";
    event.subject = "req-" + std::to_string(offset.count());
    event.details = details;
    return event;
}

class QueryTest : public ::testing::Test {
protected:
    void SetUp() override {
        StoreOptions options;
        options.database = dir.path() / "tameflared.db";
        store = Store::open(options);
    }
    // Request ids of the matches, in the order query_traffic gives them.
    std::vector<std::string> traffic_ids(const LogFilter& filter) {
        auto db = Database::open(dir.path() / "tameflared.db", Database::Mode::read_only);
        std::vector<std::string> ids;
        query_traffic(db, filter, [&](const TrafficRow& row) { ids.push_back(row.request_id); });
        return ids;
    }
    std::vector<std::int64_t> audit_seqs(const LogFilter& filter) {
        auto db = store->reader();
        std::vector<std::int64_t> seqs;
        query_audit(db, filter, [&](const AuditRecord& record) { seqs.push_back(record.seq); });
        return seqs;
    }

    testing::TempDir dir{"tf-query"};
    std::unique_ptr<Store> store;
};

// Five requests, one a minute from kBase, that differ in one field each.
class QueryTraffic : public QueryTest {
protected:
    void SetUp() override {
        QueryTest::SetUp();
        auto r1 = traffic("r1", 0s);
        auto r2 = traffic("r2", 60s);
        r2.gateway = "payments";
        auto r3 = traffic("r3", 120s);
        r3.agent = "agent-2";
        auto r4 = traffic("r4", 180s);
        r4.connector = "stripe";
        r4.action = "stripe.transfer.create";
        auto r5 = traffic("r5", 240s);
        r5.decision = "denied";
        r5.forwarded = false;
        r5.status = 403;
        // Recorded out of order: the query orders by time, not by insertion.
        for (auto& row : {r3, r1, r5, r2, r4}) store->record(row, {});
        store->flush();
    }
};

TEST_F(QueryTraffic, NoFilterGivesEveryRowOldestFirst) {
    EXPECT_EQ(traffic_ids({}), (std::vector<std::string>{"r1", "r2", "r3", "r4", "r5"}));
}

TEST_F(QueryTraffic, TimeRangeIncludesSinceAndExcludesUntil) {
    LogFilter filter;
    filter.since = kBase + 60s;
    filter.until = kBase + 180s;
    EXPECT_EQ(traffic_ids(filter), (std::vector<std::string>{"r2", "r3"}));
    filter.until.reset();
    EXPECT_EQ(traffic_ids(filter), (std::vector<std::string>{"r2", "r3", "r4", "r5"}));
}

TEST_F(QueryTraffic, EachFieldFilterNarrowsToItsRow) {
    LogFilter gateway;
    gateway.gateway = "payments";
    EXPECT_EQ(traffic_ids(gateway), std::vector<std::string>{"r2"});
    LogFilter agent;
    agent.agent = "agent-2";
    EXPECT_EQ(traffic_ids(agent), std::vector<std::string>{"r3"});
    LogFilter connector;
    connector.connector = "stripe";
    EXPECT_EQ(traffic_ids(connector), std::vector<std::string>{"r4"});
    LogFilter action;
    action.action = "stripe.transfer.create";
    EXPECT_EQ(traffic_ids(action), std::vector<std::string>{"r4"});
    LogFilter decision;
    decision.decision = "denied";
    EXPECT_EQ(traffic_ids(decision), std::vector<std::string>{"r5"});
    LogFilter combined;
    combined.gateway = "ci";
    combined.decision = "allowed";
    combined.since = kBase + 60s;
    EXPECT_EQ(traffic_ids(combined), (std::vector<std::string>{"r3", "r4"}));
}

TEST_F(QueryTraffic, LimitKeepsTheNewestAndStillPrintsOldestFirst) {
    LogFilter filter;
    filter.limit = 2;
    EXPECT_EQ(traffic_ids(filter), (std::vector<std::string>{"r4", "r5"}));
    filter.gateway = "ci";
    filter.limit = 3;
    EXPECT_EQ(traffic_ids(filter), (std::vector<std::string>{"r3", "r4", "r5"}));
}

TEST_F(QueryTraffic, FilterValuesAreDataNotSql) {
    LogFilter filter;
    filter.gateway = "ci' OR '1'='1";
    EXPECT_TRUE(traffic_ids(filter).empty());
    filter.gateway = "%";
    EXPECT_TRUE(traffic_ids(filter).empty());
}

TEST_F(QueryTraffic, RowsComeBackWithEveryField) {
    LogFilter filter;
    filter.decision = "denied";
    auto db = store->reader();
    std::vector<TrafficRow> rows;
    query_traffic(db, filter, [&](const TrafficRow& row) { rows.push_back(row); });
    ASSERT_EQ(rows.size(), 1U);
    const auto& row = rows[0];
    EXPECT_EQ(row.time, kBase + 240s);
    EXPECT_EQ(row.status, 403U);
    EXPECT_FALSE(row.forwarded);
    EXPECT_TRUE(row.completed);
    EXPECT_EQ(row.latency, 1234us);
    EXPECT_EQ(row.response_bytes, 2000U);
    EXPECT_EQ(row.host, "api.github.com");
    EXPECT_EQ(row.reason, "rule 1");
}

class QueryAudit : public QueryTest {
protected:
    void SetUp() override {
        QueryTest::SetUp();
        store->audit(audit_event("action.allowed", 0s, R"({"action":"github.repo.read"})"));
        store->audit(audit_event("action.denied", 60s, R"({"action":"github.repo.delete","rule":3})"));
        store->audit(audit_event("kill_switch.activated", 120s, R"({"by":"ops"})"));
        auto other = audit_event("action.allowed", 180s, R"({"action":"stripe.charge.create"})");
        other.gateway = "payments";
        store->audit(other);
        store->audit(audit_event("actionable", 240s, R"({})"));
        store->flush();
    }
};

TEST_F(QueryAudit, EventIsExactOrAPrefixEndingInADot) {
    LogFilter exact;
    exact.event = "action.allowed";
    EXPECT_EQ(audit_seqs(exact), (std::vector<std::int64_t>{1, 4}));
    LogFilter prefix;
    prefix.event = "action.";
    EXPECT_EQ(audit_seqs(prefix), (std::vector<std::int64_t>{1, 2, 4}));  // not "actionable"
    LogFilter no_dot;
    no_dot.event = "action";
    EXPECT_TRUE(audit_seqs(no_dot).empty());
}

TEST_F(QueryAudit, ActionMatchesTheDetails) {
    LogFilter filter;
    filter.action = "github.repo.delete";
    EXPECT_EQ(audit_seqs(filter), std::vector<std::int64_t>{2});
}

TEST_F(QueryAudit, TimeGatewayAndLimit) {
    LogFilter filter;
    filter.since = kBase + 60s;
    filter.until = kBase + 240s;
    EXPECT_EQ(audit_seqs(filter), (std::vector<std::int64_t>{2, 3, 4}));
    filter.gateway = "ci";
    EXPECT_EQ(audit_seqs(filter), (std::vector<std::int64_t>{2, 3}));
    LogFilter newest;
    newest.limit = 2;
    EXPECT_EQ(audit_seqs(newest), (std::vector<std::int64_t>{4, 5}));
}

// ---------------------------------------------------------------------------
// Export formats

// Parses CSV with python's csv module (strict): the rows, as JSON.
constexpr const char* kReadCsv = R"py(
import csv, json, sys
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    print(json.dumps(list(csv.reader(f, strict=True))))
)py";

nlohmann::json python_csv(const fs::path& file) {
    const auto result = testing::run({"/usr/bin/env", "python3", "-c", kReadCsv, file.string()});
    EXPECT_EQ(result.status, 0) << result.err;
    return nlohmann::json::parse(result.out);
}

class QueryExport : public QueryTest {};

TEST_F(QueryExport, CsvReadsBackExactlyAndDefusesFormulas) {
    auto nasty = traffic("r,1", 0s);
    nasty.path = "=cmd|' /C calc'!A0";
    nasty.host = "evil.example, \"quoted\"";
    nasty.reason = "line one\nline two\r\nthree";
    nasty.agent = "@agent";
    nasty.action = "+sum";
    nasty.method = "-X";
    nasty.connector = "\tTAB";
    nasty.gateway = "ünïcode";
    store->record(nasty, {});
    store->record(traffic("plain", 60s), {});
    store->flush();

    const fs::path file = dir.path() / "out.csv";
    {
        std::ofstream out(file, std::ios::binary);
        TrafficWriter writer(out, Format::csv);
        writer.header();
        auto db = store->reader();
        query_traffic(db, {}, [&](const TrafficRow& row) { writer.write(row); });
    }
    const auto rows = python_csv(file);
    ASSERT_EQ(rows.size(), 3U) << rows.dump();
    const auto& header = rows[0];
    ASSERT_EQ(header.size(), 17U);
    EXPECT_EQ(header[0], "time");
    EXPECT_EQ(header[8], "path");
    EXPECT_EQ(header[14], "latency_us");
    const auto& row = rows[1];
    ASSERT_EQ(row.size(), 17U);
    EXPECT_EQ(row[0], "2026-11-26T10:00:00.000000Z");
    EXPECT_EQ(row[1], "r,1");
    EXPECT_EQ(row[2], "ünïcode");
    EXPECT_EQ(row[3], "'@agent");
    EXPECT_EQ(row[4], "'\tTAB");
    EXPECT_EQ(row[5], "'+sum");
    EXPECT_EQ(row[6], "'-X");
    EXPECT_EQ(row[7], "evil.example, \"quoted\"");
    EXPECT_EQ(row[8], "'=cmd|' /C calc'!A0");
    EXPECT_EQ(row[10], "line one\nline two\r\nthree");
    EXPECT_EQ(row[11], "200");
    EXPECT_EQ(row[14], "1234");
    EXPECT_EQ(row[15], "true");
    EXPECT_EQ(rows[2][1], "plain");
    EXPECT_EQ(rows[2][8], "/repos/o/r");  // nothing added to a harmless cell
}

TEST_F(QueryExport, TrafficJsonLinesCarryEveryField) {
    auto row = traffic("r1", 0s);
    row.path = "/a\"b\nc";
    row.time += 123456us;
    store->record(row, {});
    auto pending = traffic("r2", 60s);
    pending.completed = false;
    pending.status = 0;
    store->record(pending, {});
    store->flush();

    std::ostringstream out;
    TrafficWriter writer(out, Format::jsonl);
    writer.header();
    auto db = store->reader();
    query_traffic(db, {}, [&](const TrafficRow& r) { writer.write(r); });

    std::istringstream lines(out.str());
    std::string line;
    std::vector<nlohmann::json> objects;
    while (std::getline(lines, line)) objects.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(objects.size(), 2U);
    const auto& first = objects[0];
    for (const char* field :
         {"time", "request_id", "gateway", "agent", "connector", "action", "method", "host", "path", "decision",
          "reason", "status", "request_bytes", "response_bytes", "latency_us", "forwarded", "completed"}) {
        EXPECT_TRUE(first.contains(field)) << field;
    }
    EXPECT_EQ(first.size(), 17U);
    EXPECT_EQ(first["time"], "2026-11-26T10:00:00.123456Z");
    EXPECT_EQ(first["path"], "/a\"b\nc");
    EXPECT_EQ(first["latency_us"], 1234);
    EXPECT_EQ(first["status"], 200);
    EXPECT_EQ(first["forwarded"], true);
    EXPECT_EQ(objects[1]["completed"], false);
}

TEST_F(QueryExport, AuditJsonLinesCarryTheDetailsAsAnObject) {
    store->audit(audit_event("action.denied", 0s, R"({"action":"github.repo.delete","rule":3})"));
    store->flush();
    std::ostringstream out;
    AuditWriter writer(out, Format::jsonl);
    auto db = store->reader();
    query_audit(db, {}, [&](const AuditRecord& record) { writer.write(record); });
    const auto object = nlohmann::json::parse(out.str());
    EXPECT_EQ(object["seq"], 1);
    EXPECT_EQ(object["time"], "2026-11-26T10:00:00.000000Z");
    EXPECT_EQ(object["event"], "action.denied");
    EXPECT_EQ(object["gateway"], "ci");
    EXPECT_EQ(object["agent"], "agent-1");
    EXPECT_EQ(object["actor"], "tameflared");
    EXPECT_EQ(object["subject"], "req-0");
    ASSERT_TRUE(object["details"].is_object());
    EXPECT_EQ(object["details"]["rule"], 3);
}

TEST_F(QueryExport, AuditCsvKeepsTheDetailsAsJsonText) {
    store->audit(audit_event("vault.set", 0s, R"({"name":"gh, \"token\""})"));
    store->flush();
    const fs::path file = dir.path() / "audit.csv";
    {
        std::ofstream out(file, std::ios::binary);
        AuditWriter writer(out, Format::csv);
        writer.header();
        auto db = store->reader();
        query_audit(db, {}, [&](const AuditRecord& record) { writer.write(record); });
    }
    const auto rows = python_csv(file);
    ASSERT_EQ(rows.size(), 2U);
    EXPECT_EQ(rows[0], (nlohmann::json{"seq", "time", "event", "gateway", "agent", "actor", "subject", "details"}));
    EXPECT_EQ(rows[1][0], "1");
    EXPECT_EQ(nlohmann::json::parse(rows[1][7].get<std::string>())["name"], "gh, \"token\"");
}

TEST_F(QueryExport, TheTableEscapesControlCharactersAndCutsLongCells) {
    auto row = traffic("r1", 0s);
    row.path = "/\x1b]0;owned\x07/" + std::string(100, 'a');
    row.host =
        "h\xc2\x9b"
        "31m";  // U+009B: CSI for some terminals
    std::ostringstream out;
    TrafficWriter writer(out, Format::table);
    writer.header();
    writer.write(row);
    const auto text = out.str();
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
    EXPECT_EQ(text.find("\xc2\x9b"), std::string::npos) << text;
    EXPECT_NE(text.find("\\x1b]0;owned\\x07"), std::string::npos) << text;
    EXPECT_NE(text.find("h\\xc2\\x9b31m"), std::string::npos) << text;
    EXPECT_NE(text.find(".."), std::string::npos) << text;
    EXPECT_EQ(text.find(std::string(100, 'a')), std::string::npos) << text;
    EXPECT_NE(text.find("TIME"), std::string::npos);
    EXPECT_NE(text.find("2026-11-26T10:00:00Z"), std::string::npos) << text;
    EXPECT_NE(text.find("1.2ms"), std::string::npos) << text;
}

// ---------------------------------------------------------------------------
// Times

constexpr Clock::time_point kNow = kBase;

TEST(ParseTime, Rfc3339InUtc) {
    EXPECT_EQ(parse_time("2026-11-26T10:00:00Z", kNow), kBase);
    EXPECT_EQ(parse_time("2026-11-26t10:00:00z", kNow), kBase);
    EXPECT_EQ(parse_time("2026-11-26 10:00:00Z", kNow), kBase);
}

TEST(ParseTime, Rfc3339WithOffsets) {
    EXPECT_EQ(parse_time("2026-11-26T11:30:00+01:30", kNow), kBase);
    EXPECT_EQ(parse_time("2026-11-26T05:00:00-05:00", kNow), kBase);
    EXPECT_EQ(parse_time("2026-11-26T10:00:00-00:00", kNow), kBase);
    EXPECT_EQ(parse_time("2026-11-27T00:00:00+14:00", kNow), kBase);
}

TEST(ParseTime, FractionalSecondsToTheMicrosecond) {
    EXPECT_EQ(parse_time("2026-11-26T10:00:00.5Z", kNow), kBase + 500ms);
    EXPECT_EQ(parse_time("2026-11-26T10:00:00.123456Z", kNow), kBase + 123456us);
    EXPECT_EQ(parse_time("2026-11-26T10:00:00.1234569Z", kNow), kBase + 123456us);  // beyond µs: dropped
}

TEST(ParseTime, Ages) {
    EXPECT_EQ(parse_time("90s", kNow), kNow - 90s);
    EXPECT_EQ(parse_time("15m", kNow), kNow - 15min);
    EXPECT_EQ(parse_time("2h", kNow), kNow - 2h);
    EXPECT_EQ(parse_time("7d", kNow), kNow - std::chrono::days(7));
    EXPECT_EQ(parse_time("0s", kNow), kNow);
    EXPECT_EQ(parse_time("99999999999999999999999d", kNow), Clock::time_point::min());  // before any record
}

TEST(ParseTime, FarDatesAreClampedNotWrapped) {
    const auto far = parse_time("9999-12-31T23:59:59Z", kNow);
    ASSERT_TRUE(far);
    EXPECT_GT(*far, kNow);
    const auto early = parse_time("0001-01-01T00:00:00Z", kNow);
    ASSERT_TRUE(early);
    EXPECT_LT(*early, kNow);
}

TEST(ParseTime, InvalidTextIsRefused) {
    for (const char* text : {"",
                             "yesterday",
                             "7",
                             "d",
                             "7w",
                             "-7d",
                             "7 d",
                             "1.5h",
                             "2026-11-26",
                             "2026-11-26T10:00:00",
                             "2026-11-26T10:00Z",
                             "2026-13-01T00:00:00Z",
                             "2026-02-30T00:00:00Z",
                             "2026-11-26T24:00:00Z",
                             "2026-11-26T10:60:00Z",
                             "2026-11-26T10:00:00.Z",
                             "2026-11-26T10:00:00+0100",
                             "2026-11-26T10:00:00+01",
                             "2026-11-26T10:00:00+24:00",
                             "2026-11-26T10:00:00Zjunk",
                             "26-11-26T10:00:00Z",
                             "2026-1-26T10:00:00Z"}) {
        EXPECT_FALSE(parse_time(text, kNow)) << '"' << text << '"';
    }
}

TEST(ParseTime, FormatTimeIsRfc3339UtcWithMicrosecondsAndRoundTrips) {
    EXPECT_EQ(format_time(kBase), "2026-11-26T10:00:00.000000Z");
    EXPECT_EQ(format_time(kBase + 1234567us), "2026-11-26T10:00:01.234567Z");
    EXPECT_EQ(format_time(Clock::time_point{}), "1970-01-01T00:00:00.000000Z");
    const auto time = kBase + 987654us;
    EXPECT_EQ(parse_time(format_time(time), kNow), time);
}

TEST(ParseTime, FormatNames) {
    EXPECT_EQ(parse_format("table"), Format::table);
    EXPECT_EQ(parse_format("csv"), Format::csv);
    EXPECT_EQ(parse_format("jsonl"), Format::jsonl);
    EXPECT_FALSE(parse_format("json"));
    EXPECT_FALSE(parse_format("CSV"));
}

}  // namespace
}  // namespace tameflare::store
