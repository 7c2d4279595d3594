// tf traffic and tf audit as a user runs them, on real database files that
// the Store wrote.
#include "daemon/store/database.h"
#include "daemon/store/store.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using store::Clock;

// 2026-11-26T10:00:00Z
constexpr Clock::time_point kBase = std::chrono::sys_days(std::chrono::year(2026) / 11 / 26) + 10h;

store::TrafficRow traffic_row(const std::string& id, std::chrono::seconds offset, const std::string& path) {
    store::TrafficRow row;
    row.time = kBase + offset;
    row.request_id = id;
    row.gateway = "ci";
    row.agent = "agent-1";
    row.connector = "github";
    row.action = "github.repo.read";
    row.method = "GET";
    row.host = "api.github.com";
    row.path = path;
    row.decision = "allowed";
    row.reason = "rule 1";
    row.status = 200;
    row.response_bytes = 512;
    row.latency = 2500us;
    row.forwarded = true;
    return row;
}

store::AuditEvent audit_event(const std::string& event, std::chrono::seconds offset, const nlohmann::json& details) {
    store::AuditEvent record;
    record.time = kBase + offset;
    record.event = event;
    record.gateway = "ci";
    record.agent = "agent-1";
    record.actor = "tameflared";
    record.subject = "req-" + std::to_string(offset.count());
    record.details = details.dump();
    return record;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
    std::vector<nlohmann::json> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
    return lines;
}

class StoreCli : public ::testing::Test {
protected:
    void SetUp() override { fs::create_directories(state()); }
    fs::path state() const { return dir_.path() / "state"; }
    fs::path database() const { return state() / "tameflared.db"; }

    // A store writing to the state directory; with a key, it signs a
    // checkpoint exactly when two records are not yet covered by one.
    std::unique_ptr<store::Store> open_store(std::optional<vault::VaultKey> checkpoint_key = std::nullopt) {
        store::StoreOptions options;
        options.database = database();
        options.checkpoint_key = std::move(checkpoint_key);
        options.checkpoint_interval = 1h;
        options.checkpoint_records = 2;
        return store::Store::open(options);
    }

    // tf with `args`, then --state-dir.
    Result tf(std::vector<std::string> args) {
        args.insert(args.begin(), TF_BINARY);
        args.emplace_back("--state-dir");
        args.push_back(state().string());
        return run(args);
    }

    TempDir dir_{"tf-store-cli"};
};

class TrafficCli : public StoreCli {
protected:
    void SetUp() override {
        StoreCli::SetUp();
        auto second = traffic_row("r2", 60s, "/two");
        second.gateway = "payments";
        auto third = traffic_row("r3", 120s, "=cmd|' /C calc'!A0");
        third.decision = "denied";
        third.status = 403;
        third.forwarded = false;
        const auto store = open_store();
        for (auto& row : {traffic_row("r1", 0s, "/one"), second, third}) store->record(row, {});
        store->flush();
    }
};

TEST_F(TrafficCli, QueryPrintsTheNewestRowsOldestFirstAsATable) {
    const auto result = tf({"traffic", "query", "--limit", "2"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_TRUE(contains(result.out, "TIME")) << result.out;
    EXPECT_TRUE(contains(result.out, "DECISION")) << result.out;
    EXPECT_FALSE(contains(result.out, "/one")) << result.out;
    const auto two = result.out.find("/two");
    const auto three = result.out.find("=cmd");
    ASSERT_NE(two, std::string::npos) << result.out;
    ASSERT_NE(three, std::string::npos) << result.out;
    EXPECT_LT(two, three);
    EXPECT_TRUE(contains(result.out, "2026-11-26T10:01:00Z")) << result.out;
    EXPECT_TRUE(contains(result.out, "2.5ms")) << result.out;
    EXPECT_TRUE(contains(result.err, "newest 2")) << result.err;
}

TEST_F(TrafficCli, QueryFiltersAndJsonLines) {
    const auto ci = tf({"traffic", "query", "--gateway", "ci", "--format", "jsonl"});
    ASSERT_EQ(ci.status, 0) << ci.err;
    const auto lines = json_lines(ci.out);
    ASSERT_EQ(lines.size(), 2U) << ci.out;
    EXPECT_EQ(lines[0]["request_id"], "r1");
    EXPECT_EQ(lines[1]["request_id"], "r3");
    EXPECT_EQ(lines[1]["status"], 403);
    EXPECT_EQ(lines[1]["latency_us"], 2500);
    EXPECT_EQ(lines[1]["time"], "2026-11-26T10:02:00.000000Z");

    const auto denied =
        tf({"traffic", "query", "--decision", "denied", "--since", "2026-11-26T11:00:30+01:00", "--format", "jsonl"});
    ASSERT_EQ(denied.status, 0) << denied.err;
    ASSERT_EQ(json_lines(denied.out).size(), 1U) << denied.out;
    EXPECT_EQ(json_lines(denied.out)[0]["request_id"], "r3");

    const auto none = tf({"traffic", "query", "--until", "2026-11-26T10:00:00Z"});
    ASSERT_EQ(none.status, 0) << none.err;
    EXPECT_TRUE(contains(none.out, "no matching records")) << none.out;
}

TEST_F(TrafficCli, ExportCsvWritesTheFileWholeAndKeepsAnExistingOne) {
    const fs::path file = dir_.path() / "traffic.csv";
    const auto result = tf({"traffic", "export", "--format", "csv", "--output", file.string()});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_FALSE(fs::exists(file.string() + ".tmp"));
    const auto text = read_text(file);
    EXPECT_TRUE(text.starts_with("time,request_id,gateway,")) << text;
    EXPECT_TRUE(contains(text, "\r\n")) << text;
    EXPECT_TRUE(contains(text, "'=cmd|' /C calc'!A0")) << text;
    EXPECT_EQ(fs::status(file).permissions() & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);
    EXPECT_TRUE(contains(result.err, "3 records written")) << result.err;

    std::ofstream(file) << "keep me\n";
    const auto again = tf({"traffic", "export", "--format", "csv", "--output", file.string()});
    EXPECT_EQ(again.status, 2);
    EXPECT_TRUE(contains(again.err, file.string())) << again.err;
    EXPECT_TRUE(contains(again.err, "--force")) << again.err;
    EXPECT_EQ(read_text(file), "keep me\n");
    EXPECT_FALSE(fs::exists(file.string() + ".tmp"));

    const auto forced = tf({"traffic", "export", "--format", "jsonl", "--output", file.string(), "--force"});
    ASSERT_EQ(forced.status, 0) << forced.err;
    EXPECT_EQ(json_lines(read_text(file)).size(), 3U);
}

TEST_F(TrafficCli, ExportToStandardOutputHasNoLimit) {
    const auto result = tf({"traffic", "export", "--format", "jsonl", "--agent", "agent-1"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(json_lines(result.out).size(), 3U);
}

TEST_F(TrafficCli, UsageErrorsNameTheFlagAndTheAcceptedForms) {
    const auto format = tf({"traffic", "query", "--format", "xml"});
    EXPECT_EQ(format.status, 2);
    EXPECT_TRUE(contains(format.err, "--format \"xml\"")) << format.err;
    EXPECT_TRUE(contains(format.err, "table, csv or jsonl")) << format.err;

    const auto since = tf({"traffic", "query", "--since", "yesterday"});
    EXPECT_EQ(since.status, 2);
    EXPECT_TRUE(contains(since.err, "--since \"yesterday\"")) << since.err;
    EXPECT_TRUE(contains(since.err, "RFC 3339")) << since.err;
    EXPECT_TRUE(contains(since.err, "7d")) << since.err;

    const auto limit = tf({"traffic", "query", "--limit", "ten"});
    EXPECT_EQ(limit.status, 2);
    EXPECT_TRUE(contains(limit.err, "--limit")) << limit.err;

    const auto no_format = tf({"traffic", "export"});
    EXPECT_EQ(no_format.status, 2);
    EXPECT_TRUE(contains(no_format.err, "--format csv or --format jsonl")) << no_format.err;

    const auto table_export = tf({"traffic", "export", "--format", "table"});
    EXPECT_EQ(table_export.status, 2);
    EXPECT_TRUE(contains(table_export.err, "csv or jsonl")) << table_export.err;

    const auto audit_option = tf({"traffic", "query", "--event", "action."});
    EXPECT_EQ(audit_option.status, 2);
    EXPECT_TRUE(contains(audit_option.err, "--event")) << audit_option.err;

    const auto missing_value = run({TF_BINARY, "traffic", "query", "--gateway"});
    EXPECT_EQ(missing_value.status, 2);
    EXPECT_TRUE(contains(missing_value.err, "--gateway needs a value")) << missing_value.err;

    EXPECT_EQ(run({TF_BINARY, "traffic"}).status, 2);
    EXPECT_EQ(run({TF_BINARY, "traffic", "verify"}).status, 2);
}

TEST_F(TrafficCli, HelpDescribesTheFiltersAndExitsZero) {
    for (const auto& args : std::vector<std::vector<std::string>>{{TF_BINARY, "traffic", "--help"},
                                                                  {TF_BINARY, "traffic", "query", "--help"},
                                                                  {TF_BINARY, "traffic", "export", "-h"}}) {
        const auto result = run(args);
        EXPECT_EQ(result.status, 0) << args.back();
        EXPECT_TRUE(contains(result.out, "--since")) << result.out;
        EXPECT_TRUE(contains(result.out, "--state-dir")) << result.out;
    }
}

TEST(TrafficCliWithoutState, AMissingDatabaseSaysWhereAndHowToPointAtIt) {
    TempDir empty("tf-store-cli");
    const auto result = run({TF_BINARY, "traffic", "query", "--state-dir", empty.path().string()});
    EXPECT_EQ(result.status, 2);
    EXPECT_TRUE(contains(result.err, (empty.path() / "tameflared.db").string())) << result.err;
    EXPECT_TRUE(contains(result.err, "--state-dir")) << result.err;
    EXPECT_TRUE(contains(result.err, "-c FILE")) << result.err;
    EXPECT_FALSE(fs::exists(empty.path() / "tameflared.db"));  // read-only: nothing created
}

// Three records; a checkpoint signed with state/audit.key covers the first two.
class AuditCli : public StoreCli {
protected:
    void SetUp() override {
        StoreCli::SetUp();
        {
            const auto store = open_store(vault::VaultKey::load_or_create(state() / "audit.key", nullptr, "audit.key"));
            store->audit(audit_event("action.allowed", 0s, {{"action", "github.repo.read"}}));
            store->audit(audit_event("action.denied", 60s, {{"action", "github.repo.delete"}, {"rule", 3}}));
            store->flush();
        }
        const auto store = open_store();
        store->audit(audit_event("kill_switch.activated", 120s, {{"by", "ops"}}));
        store->flush();
    }
};

TEST_F(AuditCli, VerifyAcceptsAnIntactLogAndChecksTheSignatures) {
    const auto result = tf({"audit", "verify"});
    EXPECT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_TRUE(contains(result.out,
                         "audit log OK: 3 records (seq 1..3), 1 signed checkpoint verified, 1 record after the last "
                         "checkpoint"))
        << result.out;
    EXPECT_FALSE(contains(result.out, "not checked")) << result.out;
}

TEST_F(AuditCli, VerifyTakesTheKeyFromKeyFile) {
    const fs::path key = dir_.path() / "elsewhere.key";
    fs::rename(state() / "audit.key", key);
    const auto result = tf({"audit", "verify", "--key", key.string()});
    EXPECT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_TRUE(contains(result.out, "1 signed checkpoint verified")) << result.out;

    const auto missing = tf({"audit", "verify", "--key", (dir_.path() / "nope.key").string()});
    EXPECT_EQ(missing.status, 2);
    EXPECT_TRUE(contains(missing.err, "nope.key")) << missing.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "nope.key"));  // never created
}

TEST_F(AuditCli, VerifyWithoutTheKeySaysTheSignaturesWereNotChecked) {
    fs::remove(state() / "audit.key");
    const auto result = tf({"audit", "verify"});
    EXPECT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_TRUE(contains(result.out, "audit log OK: 3 records (seq 1..3)")) << result.out;
    EXPECT_TRUE(contains(result.out, "were not checked")) << result.out;
    EXPECT_TRUE(contains(result.out, "--key FILE")) << result.out;
    EXPECT_FALSE(fs::exists(state() / "audit.key"));  // never created
}

TEST_F(AuditCli, VerifyNamesAnEditedRecordAndExitsOne) {
    {
        auto db = store::Database::open(database());  // a second, read-write connection
        db.prepare("UPDATE audit SET details = ? WHERE seq = 2").bind(1, std::string_view(R"({"action":"x"})")).run();
    }
    const auto result = tf({"audit", "verify"});
    EXPECT_EQ(result.status, 1) << result.out << result.err;
    EXPECT_TRUE(contains(result.out, "audit log BROKEN at record 2: ")) << result.out;
}

TEST_F(AuditCli, QueryByEventPrefixAndByAction) {
    const auto prefix = tf({"audit", "query", "--event", "action.", "--format", "jsonl"});
    ASSERT_EQ(prefix.status, 0) << prefix.err;
    const auto lines = json_lines(prefix.out);
    ASSERT_EQ(lines.size(), 2U) << prefix.out;
    EXPECT_EQ(lines[0]["seq"], 1);
    EXPECT_EQ(lines[1]["seq"], 2);
    EXPECT_EQ(lines[1]["details"]["rule"], 3);
    for (const char* field : {"seq", "time", "event", "gateway", "agent", "actor", "subject", "details"}) {
        EXPECT_TRUE(lines[0].contains(field)) << field;
    }

    const auto action = tf({"audit", "query", "--action", "github.repo.delete", "--format", "jsonl"});
    ASSERT_EQ(action.status, 0) << action.err;
    ASSERT_EQ(json_lines(action.out).size(), 1U) << action.out;
    EXPECT_EQ(json_lines(action.out)[0]["event"], "action.denied");

    const auto table = tf({"audit", "query", "--event", "kill_switch.activated"});
    ASSERT_EQ(table.status, 0) << table.err;
    EXPECT_TRUE(contains(table.out, "SEQ")) << table.out;
    EXPECT_TRUE(contains(table.out, "kill_switch.activated")) << table.out;
    EXPECT_FALSE(contains(table.out, "action.denied")) << table.out;
}

TEST_F(AuditCli, ExportCsvToAFile) {
    const fs::path file = dir_.path() / "audit.csv";
    const auto result =
        tf({"audit", "export", "--format", "csv", "--output", file.string(), "--since", "2026-11-26T10:02:00.000001Z"});
    ASSERT_EQ(result.status, 0) << result.err;  // after every record
    EXPECT_EQ(read_text(file), "seq,time,event,gateway,agent,actor,subject,details\r\n");
    const auto all = tf({"audit", "export", "--format", "csv", "--output", file.string(), "--force"});
    ASSERT_EQ(all.status, 0) << all.err;
    EXPECT_TRUE(contains(read_text(file), "3,2026-11-26T10:02:00.000000Z,kill_switch.activated")) << read_text(file);
}

TEST_F(AuditCli, VerifyTakesNoFilters) {
    const auto result = tf({"audit", "verify", "--gateway", "ci"});
    EXPECT_EQ(result.status, 2);
    EXPECT_TRUE(contains(result.err, "--gateway")) << result.err;
}

}  // namespace
}  // namespace tameflare::testing
