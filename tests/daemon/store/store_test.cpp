// The store as the daemon uses it: real SQLite files in temporary
// directories, a real tmpfs for the disk-full case, a real SIGKILL for the
// durability promise.
#include "daemon/store/store.h"
#include "daemon/store/schema.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

namespace tameflare::store {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

TrafficRow row(const std::string& id, const std::string& decision = "allowed") {
    TrafficRow r;
    r.time = Clock::now();
    r.request_id = id;
    r.gateway = "ci";
    r.agent = "agent-1";
    r.connector = "github";
    r.action = "github.pr.merge";
    r.method = "PUT";
    r.host = "api.github.com";
    r.path = "/repos/o/r/pulls/1/merge";
    r.decision = decision;
    r.reason = "rule 1";
    r.status = 200;
    r.forwarded = decision == "allowed";
    return r;
}

// Blocks until `done` is called; returns its error.
std::string commit_and_wait(Store& store, TrafficRow r) {
    std::promise<std::string> result;
    auto future = result.get_future();
    store.commit(std::move(r), {}, [&result](const std::string& error) { result.set_value(error); });
    return future.get();
}

class StoreTest : public ::testing::Test {
protected:
    fs::path db_path() const { return dir.path() / "tameflared.db"; }
    std::unique_ptr<Store> open() {
        StoreOptions options;
        options.database = db_path();
        return Store::open(options);
    }
    testing::TempDir dir{"tf-store"};
};

TEST_F(StoreTest, ANewDatabaseHasTheCurrentSchemaAndWal) {
    open().reset();
    auto db = Database::open(db_path(), Database::Mode::read_only);
    EXPECT_EQ(db.schema_version(), Database::current_version());
    EXPECT_EQ(db.scalar("PRAGMA application_id"), 0x54464C44);
    auto mode = db.prepare("PRAGMA journal_mode");
    ASSERT_TRUE(mode.step());
    EXPECT_EQ(mode.text(0), "wal");
}

TEST_F(StoreTest, ABorrowedBindingIsStoredAndDroppedByRun) {
    auto db = Database::open(db_path());
    db.exec("CREATE TABLE borrowed (value TEXT, bytes BLOB)");
    auto insert = db.prepare("INSERT INTO borrowed (value, bytes) VALUES (?, ?)");
    {
        auto value = std::make_unique<std::string>("a value long enough to live on the heap");
        const std::array<unsigned char, 3> bytes{1, 2, 3};
        insert.bind_borrowed(1, *value).bind_blob_borrowed(2, bytes.data(), bytes.size());
        insert.run();
        // The same bytes, overwritten and freed: the stored row must not see it.
        value->assign(value->size(), 'x');
    }
    // Run again without binding: run() dropped the borrowed values, so this
    // row is NULL rather than whatever is now at their old addresses.
    insert.run();
    auto rows = db.prepare("SELECT value, hex(bytes), value IS NULL AND bytes IS NULL FROM borrowed ORDER BY rowid");
    ASSERT_TRUE(rows.step());
    EXPECT_EQ(rows.text(0), "a value long enough to live on the heap");
    EXPECT_EQ(rows.text(1), "010203");
    ASSERT_TRUE(rows.step());
    EXPECT_EQ(rows.integer(2), 1);
    EXPECT_FALSE(rows.step());
}

TEST_F(StoreTest, AnOlderDatabaseIsMigratedAndKeepsItsRows) {
    {
        sqlite3* raw = nullptr;
        ASSERT_EQ(sqlite3_open(db_path().c_str(), &raw), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(raw, migration(1), nullptr, nullptr, nullptr), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(raw,
                               "PRAGMA user_version=1; PRAGMA application_id=1413893188;"
                               "INSERT INTO traffic VALUES (1, 'old-request', 1, 'ci', 'a', 'github', 'x', 'GET', 'h', "
                               "'/', 'allowed', 'r', 200, 0, 0, 5, 1, 1);",
                               nullptr, nullptr, nullptr),
                  SQLITE_OK);
        sqlite3_close(raw);
    }
    {
        auto store = open();
        store->flush();
    }
    auto db = Database::open(db_path(), Database::Mode::read_only);
    EXPECT_EQ(db.schema_version(), Database::current_version());
    EXPECT_EQ(db.scalar("SELECT count(*) FROM traffic WHERE request_id = 'old-request'"), 1);
    EXPECT_EQ(db.scalar("SELECT count(*) FROM vault"), 0);  // the table version 2 added
}

TEST_F(StoreTest, AFileThatIsNotSqliteIsRefusedAndLeftAlone) {
    {
        std::ofstream out(db_path());
        out << "this is somebody's notes file, not a database\n";
    }
    const auto before = read_file(db_path());
    try {
        open();
        FAIL() << "opened a foreign file";
    } catch (const StoreError& error) {
        EXPECT_NE(std::string(error.what()).find("not a SQLite database"), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find(db_path().string()), std::string::npos) << error.what();
    }
    EXPECT_EQ(read_file(db_path()), before);
}

TEST_F(StoreTest, AnotherProgramsDatabaseIsRefusedAndLeftAlone) {
    {
        sqlite3* raw = nullptr;
        ASSERT_EQ(sqlite3_open(db_path().c_str(), &raw), SQLITE_OK);
        ASSERT_EQ(
            sqlite3_exec(raw,
                         "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO photos VALUES (1, 'x');",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
        sqlite3_close(raw);
    }
    const auto before = read_file(db_path());
    EXPECT_THROW(
        {
            try {
                open();
            } catch (const StoreError& error) {
                EXPECT_NE(std::string(error.what()).find("another program"), std::string::npos) << error.what();
                throw;
            }
        },
        StoreError);
    EXPECT_EQ(read_file(db_path()), before);
}

TEST_F(StoreTest, ACorruptDatabaseIsRefusedAndLeftAlone) {
    {
        auto store = open();
        for (int i = 0; i < 200; ++i) store->record(row("r" + std::to_string(i)), {});
        store->flush();
    }
    // Checkpointed into the main file; now damage the schema page after the header.
    {
        auto db = Database::open(db_path());
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    }
    {
        std::fstream file(db_path(), std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(120);
        const std::string garbage(3000, '\x5a');
        file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
    const auto before = read_file(db_path());
    try {
        open();
        FAIL() << "opened a corrupt file";
    } catch (const StoreError& error) {
        EXPECT_NE(std::string(error.what()).find("corrupt"), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find("move it aside"), std::string::npos) << error.what();
    }
    EXPECT_EQ(read_file(db_path()), before);
}

TEST_F(StoreTest, ADatabaseFromANewerVersionIsRefused) {
    open().reset();
    {
        auto db = Database::open(db_path());
        db.exec("PRAGMA user_version=99");
    }
    try {
        open();
        FAIL() << "opened a newer schema";
    } catch (const StoreError& error) {
        EXPECT_NE(std::string(error.what()).find("newer"), std::string::npos) << error.what();
    }
}

TEST_F(StoreTest, ACommittedRowIsVisibleToAnotherConnectionWhenDoneIsCalled) {
    auto store = open();
    std::promise<std::int64_t> seen;
    auto future = seen.get_future();
    const fs::path path = db_path();
    store->commit(row("visible"), {}, [&seen, path](const std::string& error) {
        EXPECT_EQ(error, "");
        auto reader = Database::open(path, Database::Mode::read_only);
        seen.set_value(reader.scalar("SELECT count(*) FROM traffic WHERE request_id = 'visible' AND completed = 0"));
    });
    EXPECT_EQ(future.get(), 1);
}

TEST_F(StoreTest, ConcurrentCommitsShareTransactions) {
    auto store = open();
    constexpr int kThreads = 4;
    constexpr int kEach = 5000;
    std::atomic<int> ok{0}, failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                store->commit(row("t" + std::to_string(t) + "-" + std::to_string(i)), {},
                              [&](const std::string& error) { (error.empty() ? ok : failed)++; });
            }
        });
    }
    for (auto& thread : threads) thread.join();
    store->flush();
    EXPECT_EQ(ok.load(), kThreads * kEach);
    EXPECT_EQ(failed.load(), 0);
    const auto counters = store->counters();
    EXPECT_LT(counters.transactions * 10, static_cast<std::uint64_t>(kThreads * kEach))
        << "group commit: " << counters.transactions << " transactions for " << kThreads * kEach << " writes";
    auto reader = store->reader();
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic"), kThreads * kEach);
}

// Under steady traffic a commit always lands while a checkpoint is syncing;
// the write-ahead log must still start over instead of growing without end.
// SQLite counts the restarts in the log's header (bytes 12-15, big-endian:
// the checkpoint sequence number), so the test watches that rather than a
// size, which would depend on how fast this disk syncs.
TEST_F(StoreTest, TheWriteAheadLogStartsOverUnderSteadyCommits) {
    StoreOptions options;
    options.database = db_path();
    options.wal_checkpoint_pages = 1000;
    auto store = Store::open(options);
    const auto wal = fs::path(db_path().string() + "-wal");
    const auto restarts = [&wal] {
        std::ifstream in(wal, std::ios::binary);
        std::array<unsigned char, 32> header{};
        in.read(reinterpret_cast<char*>(header.data()), header.size());
        EXPECT_EQ(in.gcount(), 32) << wal << " has no header";
        std::uint32_t value = 0;
        for (int i = 12; i < 16; ++i) value = (value << 8) | header[i];
        return value;
    };
    ASSERT_EQ(commit_and_wait(*store, row("steady-first")), "");
    const auto first = restarts();
    // About 50,000 pages, so dozens of checkpoints.
    constexpr int kCommits = 16000;
    for (int i = 0; i < kCommits; ++i) ASSERT_EQ(commit_and_wait(*store, row("steady-" + std::to_string(i))), "");
    const auto checkpoints = store->counters().wal_checkpoints;
    EXPECT_GE(checkpoints, 2u);
    // Every checkpoint but one still running or just finished has been
    // followed by a commit that started the log over. Without the writers
    // held back at the end of each, that happens only when a checkpoint
    // finishes between two commits by chance (0 to 4 times here).
    EXPECT_GE(restarts() - first + 1, checkpoints) << "the log holds " << fs::file_size(wal) << " bytes";
}

TEST_F(StoreTest, TheFinalRecordCompletesTheRowWrittenBeforeTheForward) {
    auto store = open();
    ASSERT_EQ(commit_and_wait(*store, row("req-1")), "");
    auto done = row("req-1");
    done.status = 201;
    done.response_bytes = 512;
    done.latency = std::chrono::microseconds(1234);
    store->record(done, {AuditEvent{Clock::now(), "action.executed", "ci", "agent-1", "agent", "req-1", "{}"}});
    store->flush();
    auto reader = store->reader();
    auto rows =
        reader.prepare("SELECT count(*), max(status), max(completed), max(forwarded), max(latency_us) FROM traffic");
    ASSERT_TRUE(rows.step());
    EXPECT_EQ(rows.integer(0), 1);
    EXPECT_EQ(rows.integer(1), 201);
    EXPECT_EQ(rows.integer(2), 1);
    EXPECT_EQ(rows.integer(3), 1);
    EXPECT_EQ(rows.integer(4), 1234);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM audit WHERE event = 'action.executed'"), 1);
}

TEST_F(StoreTest, RuntimeStateSurvivesARestart) {
    const std::string kill = R"({"active":true,"scope":"gateway","gateway":"ci","reason":"incident"})";
    {
        auto store = open();
        store->set_state("kill_switch", kill,
                         AuditEvent{Clock::now(), "kill_switch.activated", "ci", "", "uid:0", "kill_switch", kill});
    }
    auto store = open();
    EXPECT_EQ(store->state("kill_switch").value_or(""), kill);
    EXPECT_FALSE(store->state("nothing").has_value());
    auto reader = store->reader();
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM audit WHERE event = 'kill_switch.activated'"), 1);
}

TEST_F(StoreTest, PendingApprovalsAreExpiredAfterARestart) {
    {
        auto store = open();
        store->approval_requested(ApprovalRow{"held-1", "ci", "agent-1", "github", "github.pr.merge", "high", "{}",
                                              "needs a human", Clock::now(), std::chrono::seconds(300)});
        store->approval_requested(ApprovalRow{"held-2", "ci", "agent-1", "github", "github.pr.merge", "high", "{}",
                                              "needs a human", Clock::now(), std::chrono::seconds(300)});
        store->approval_answered("held-2", "approved", "ok",
                                 AuditEvent{Clock::now(), "approval.responded", "ci", "agent-1", "uid:1000", "held-2",
                                            R"({"decision":"approved"})"});
        store->flush();
    }
    auto store = open();
    EXPECT_EQ(store->expire_pending_approvals("tameflared restarted; the held connection is gone"), 1U);
    EXPECT_EQ(store->expire_pending_approvals("again"), 0U);
    auto reader = store->reader();
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM approvals WHERE id = 'held-1' AND state = 'expired'"), 1);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM approvals WHERE id = 'held-2' AND state = 'approved'"), 1);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM audit WHERE event = 'approval.responded' AND subject = 'held-1' "
                            "AND json_extract(details, '$.decision') = 'expired'"),
              1);
}

TEST_F(StoreTest, TheAgentRegistryRecordsStartAndExit) {
    auto store = open();
    store->agent_started(AgentRow{"agent-7", "ci", "builder", 1000, 4242, "./agent --fast", Clock::now()});
    store->agent_exited("agent-7", 3);
    store->flush();
    auto reader = store->reader();
    auto rows =
        reader.prepare("SELECT gateway, uid, pid, exit_code, exited IS NOT NULL FROM agents WHERE id = 'agent-7'");
    ASSERT_TRUE(rows.step());
    EXPECT_EQ(rows.text(0), "ci");
    EXPECT_EQ(rows.integer(1), 1000);
    EXPECT_EQ(rows.integer(2), 4242);
    EXPECT_EQ(rows.integer(3), 3);
    EXPECT_EQ(rows.integer(4), 1);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM audit WHERE event IN ('agent.started', 'agent.exited')"), 2);
}

TEST_F(StoreTest, RetentionBySizeShrinksTheFileAndIsAudited) {
    StoreOptions options;
    options.database = db_path();
    options.retention.max_bytes = 1 << 20;
    options.retention.interval = std::chrono::hours(1000);
    auto store = Store::open(options);
    for (int i = 0; i < 20000; ++i) {
        auto r = row("size-" + std::to_string(i));
        r.time = Clock::now() - std::chrono::seconds(20000 - i);
        r.reason = std::string(200, 'x');
        store->record(r, {});
    }
    store->flush();
    {
        auto reader = store->reader();
        ASSERT_GT(reader.scalar("PRAGMA page_size") * reader.scalar("PRAGMA page_count"), 4 << 20);
    }
    // The pass at start may have removed some already, while rows arrived.
    store->apply_retention();
    auto reader = store->reader();
    const auto remaining = reader.scalar("SELECT count(*) FROM traffic");
    EXPECT_LT(remaining, 10000);
    // The oldest went first.
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic WHERE request_id = 'size-19999'"), 1);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic WHERE request_id = 'size-0'"), 0);
    EXPECT_GE(reader.scalar("SELECT count(*) FROM audit WHERE event = 'retention.applied'"), 1);
    const std::int64_t used = reader.scalar("PRAGMA page_size") *
                              (reader.scalar("PRAGMA page_count") - reader.scalar("PRAGMA freelist_count"));
    EXPECT_LE(used, 1 << 20);
}

TEST_F(StoreTest, RetentionByAgeKeepsRecentRows) {
    StoreOptions options;
    options.database = db_path();
    options.retention.max_age = std::chrono::hours(24 * 7);
    options.retention.interval = std::chrono::hours(1000);
    auto store = Store::open(options);
    auto old = row("old");
    old.time = Clock::now() - std::chrono::hours(24 * 8);
    store->record(old, {});
    store->record(row("new"), {});
    store->flush();
    store->apply_retention();
    auto reader = store->reader();
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic WHERE request_id = 'old'"), 0);
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic WHERE request_id = 'new'"), 1);
}

// The promise the proxy relies on: once `done` said durable, the row is on
// disk, even if the process is killed with SIGKILL the next instant.
TEST_F(StoreTest, EveryAcknowledgedCommitSurvivesKill9) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        close(fds[0]);
        StoreOptions options;
        options.database = db_path();
        auto store = Store::open(options);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&store, t, fd = fds[1]] {
                for (std::uint32_t i = 0;; ++i) {
                    const std::uint32_t id = static_cast<std::uint32_t>(t) << 24 | i;
                    store->commit(row(std::to_string(id)), {}, [fd, id](const std::string& error) {
                        if (error.empty()) (void)!write(fd, &id, sizeof id);
                    });
                    if (i % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
                }
            });
        }
        for (auto& thread : threads) thread.join();
        _exit(0);
    }
    close(fds[1]);
    std::set<std::uint32_t> acknowledged;
    std::uint32_t id = 0;
    while (acknowledged.size() < 20000 && read(fds[0], &id, sizeof id) == sizeof id) acknowledged.insert(id);
    kill(child, SIGKILL);
    while (read(fds[0], &id, sizeof id) == sizeof id) acknowledged.insert(id);
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    ASSERT_GE(acknowledged.size(), 20000U);

    auto db = Database::open(db_path());
    std::set<std::uint32_t> stored;
    auto rows = db.prepare("SELECT request_id FROM traffic");
    while (rows.step()) stored.insert(static_cast<std::uint32_t>(std::stoul(rows.text(0))));
    std::size_t missing = 0;
    for (const auto acked : acknowledged) missing += stored.count(acked) == 0 ? 1 : 0;
    EXPECT_EQ(missing, 0U) << "of " << acknowledged.size() << " acknowledged commits";
    std::printf("[   INFO   ] %zu acknowledged before SIGKILL, %zu rows on disk, none missing\n", acknowledged.size(),
                stored.size());
}

// A full disk: durable writes are refused (the proxy then refuses to
// forward), nothing queued is lost, and writing resumes once space is free.
TEST_F(StoreTest, AFullDiskRefusesDurableWritesAndRecovers) {
    const fs::path mount_point = dir.path() / "small";
    fs::create_directory(mount_point);
    if (mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=2m") != 0) {
        GTEST_SKIP() << "cannot mount a 2 MiB tmpfs here (" << std::strerror(errno)
                     << "); needs root with CAP_SYS_ADMIN";
    }
    struct Unmount {
        fs::path path;
        ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
    } unmount{mount_point};

    StoreOptions options;
    options.database = mount_point / "tameflared.db";
    auto store = Store::open(options);
    ASSERT_EQ(commit_and_wait(*store, row("before")), "");
    // Fill the file system.
    {
        std::ofstream filler(mount_point / "filler", std::ios::binary);
        const std::string block(64 << 10, '\0');
        while (filler.write(block.data(), static_cast<std::streamsize>(block.size()))) {
        }
    }
    std::string error;
    for (int i = 0; i < 5000 && error.empty(); ++i) {
        auto r = row("fill-" + std::to_string(i));
        r.reason = std::string(1000, 'y');
        error = commit_and_wait(*store, r);
    }
    ASSERT_FALSE(error.empty()) << "the disk never filled";
    EXPECT_NE(error.find("full"), std::string::npos) << error;
    EXPECT_FALSE(store->health().empty());
    // While unhealthy a durable write is refused at once.
    EXPECT_FALSE(commit_and_wait(*store, row("refused")).empty());
    // A record that is not awaited is kept and retried.
    store->record(row("kept", "denied"), {});

    fs::remove(mount_point / "filler");
    std::string after = "not yet";
    for (int i = 0; i < 100 && !after.empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        after = commit_and_wait(*store, row("after-" + std::to_string(i)));
    }
    EXPECT_EQ(after, "");
    EXPECT_TRUE(store->health().empty());
    store->flush();
    auto reader = store->reader();
    EXPECT_EQ(reader.scalar("SELECT count(*) FROM traffic WHERE request_id IN ('before', 'kept')"), 2);
    EXPECT_EQ(store->counters().lost_writes, 0U);
}

}  // namespace
}  // namespace tameflare::store
