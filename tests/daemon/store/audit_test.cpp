// The audit chain: every kind of tampering is caught and the first broken
// record is named. Tampering is done the way an attacker with the file would
// do it: SQL through a second connection to the same database.
#include "daemon/store/audit.h"
#include "daemon/store/store.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace tameflare::store {
namespace {

AuditEvent event(int n) {
    return AuditEvent{Clock::now(),
                      "action.allowed",
                      "ci",
                      "agent-1",
                      "tameflared",
                      "request-" + std::to_string(n),
                      nlohmann::json{{"action", "github.pr.merge"}, {"n", n}}.dump()};
}

class AuditChainTest : public ::testing::Test {
protected:
    void fill(int count, bool signed_checkpoints = false) {
        StoreOptions options;
        options.database = dir.path() / "tameflared.db";
        if (signed_checkpoints) {
            options.checkpoint_key = key;
            options.checkpoint_interval = std::chrono::milliseconds(0);
        }
        auto store = Store::open(options);
        for (int i = 1; i <= count; ++i) {
            store->audit(event(i));
            // Flushing every 10 records gives checkpoints at 10, 20, ...
            if (i % 10 == 0) store->flush();
        }
        store->flush();
    }
    Database attacker() { return Database::open(dir.path() / "tameflared.db"); }
    VerifyReport verify(const vault::VaultKey* with_key = nullptr) {
        auto db = Database::open(dir.path() / "tameflared.db", Database::Mode::read_only);
        return verify_audit(db, with_key);
    }
    // What an attacker without the key can do: recompute every hash from
    // `from` on, so the chain itself is consistent again.
    void rehash_from(Database& db, std::int64_t from) {
        Hash previous{};
        auto head = db.prepare("SELECT hash FROM audit WHERE seq = ?");
        head.bind(1, from - 1);
        if (head.step()) {
            const auto blob = head.blob(0);
            std::copy(blob.begin(), blob.end(), previous.begin());
        }
        head.reset();
        auto rows = db.prepare(
            "SELECT seq, time, event, gateway, agent, actor, subject, details FROM audit WHERE seq >= ? ORDER BY seq");
        rows.bind(1, from);
        std::vector<std::pair<std::int64_t, std::pair<Hash, Hash>>> updates;
        while (rows.step()) {
            AuditEvent e{Clock::now(), rows.text(2), rows.text(3), rows.text(4),
                         rows.text(5), rows.text(6), rows.text(7)};
            const Hash hash = chain_hash(previous, canonical(rows.integer(0), rows.integer(1), e));
            updates.push_back({rows.integer(0), {previous, hash}});
            previous = hash;
        }
        rows.reset();
        auto update = db.prepare("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?");
        for (const auto& [seq, hashes] : updates) {
            update.bind_blob(1, hashes.first.data(), 32).bind_blob(2, hashes.second.data(), 32).bind(3, seq).run();
        }
    }

    testing::TempDir dir{"tf-audit"};
    vault::VaultKey key = vault::VaultKey::generate();
};

// The bytes that are hashed are the chain's file format: every chain written
// so far must verify with every later build. Pinned here, escaping included
// (quotes, backslashes, non-ASCII as \u, as nlohmann's ensure_ascii writes).
TEST(AuditCanonicalTest, TheHashedEncodingNeverChanges) {
    const AuditEvent pinned{std::chrono::system_clock::time_point(std::chrono::microseconds(1700000000000000)),
                            "action.allowed",
                            "ci",
                            "a1",
                            "agent:a1",
                            "r1",
                            R"({"host":"api.github.com","note":"caf)"
                            "\xc3\xa9"  // é in UTF-8
                            R"( \\ tab\t"})"};
    const std::string expected =
        R"({"actor":"agent:a1","agent":"a1","details":"{\"host\":\"api.github.com\",\"note\":\"caf\u00e9 )"
        R"(\\\\ tab\\t\"}","event":"action.allowed","gateway":"ci","seq":7,"subject":"r1","time":1700000000000000})";
    EXPECT_EQ(canonical(7, 1700000000000000, pinned), expected);
    EXPECT_EQ(to_hex(chain_hash(Hash{}, expected)), "8da4a0544b5601e57e93ccca027218304233a76186ce14773b1c5de8d9b46baf");
}

TEST_F(AuditChainTest, AnUntouchedChainVerifies) {
    fill(25, true);
    const auto report = verify(&key);
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.records, 25U);
    EXPECT_EQ(report.first_seq, 1);
    EXPECT_EQ(report.last_seq, 25);
    EXPECT_GE(report.checkpoints, 2U);
    EXPECT_EQ(report.after_last_checkpoint, 0U);
}

TEST_F(AuditChainTest, AnEditedRecordIsNamed) {
    fill(20);
    attacker().exec(R"(UPDATE audit SET details = '{"action":"github.pr.get","n":7}' WHERE seq = 7)");
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 7);
    EXPECT_NE(report.problem.find("changed"), std::string::npos) << report.problem;
}

TEST_F(AuditChainTest, AnEditWithItsOwnHashRecomputedBreaksTheNextLink) {
    fill(20);
    auto db = attacker();
    db.exec("UPDATE audit SET actor = 'someone else' WHERE seq = 7");
    // Recompute record 7's own hash only.
    Hash previous{};
    {
        auto row = db.prepare("SELECT hash FROM audit WHERE seq = 6");
        ASSERT_TRUE(row.step());
        const auto blob = row.blob(0);
        std::copy(blob.begin(), blob.end(), previous.begin());
    }
    auto row = db.prepare("SELECT time, event, gateway, agent, actor, subject, details FROM audit WHERE seq = 7");
    ASSERT_TRUE(row.step());
    const AuditEvent e{Clock::now(), row.text(1), row.text(2), row.text(3), row.text(4), row.text(5), row.text(6)};
    const Hash hash = chain_hash(previous, canonical(7, row.integer(0), e));
    row.reset();
    db.prepare("UPDATE audit SET hash = ? WHERE seq = 7").bind_blob(1, hash.data(), 32).run();
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 8);
    EXPECT_NE(report.problem.find("does not follow record 7"), std::string::npos) << report.problem;
}

TEST_F(AuditChainTest, ADeletedRecordIsNamed) {
    fill(20);
    attacker().exec("DELETE FROM audit WHERE seq = 5");
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 5);
    EXPECT_NE(report.problem.find("missing"), std::string::npos) << report.problem;
}

TEST_F(AuditChainTest, DeletingTheStartIsCaught) {
    fill(20);
    attacker().exec("DELETE FROM audit WHERE seq <= 3");
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 1);
}

TEST_F(AuditChainTest, AnInsertedRecordIsCaught) {
    fill(20);
    auto db = attacker();
    // Make room at 10 and insert a well-formed record that follows record 9.
    db.exec("UPDATE audit SET seq = seq + 1000 WHERE seq >= 10");
    db.exec("UPDATE audit SET seq = seq - 999 WHERE seq >= 1000");
    Hash previous{};
    {
        auto row = db.prepare("SELECT hash FROM audit WHERE seq = 9");
        ASSERT_TRUE(row.step());
        const auto blob = row.blob(0);
        std::copy(blob.begin(), blob.end(), previous.begin());
    }
    const AuditEvent forged{Clock::now(), "approval.responded",        "ci", "agent-1", "uid:1000",
                            "request-x",  R"({"decision":"approved"})"};
    const Hash hash = chain_hash(previous, canonical(10, 1, forged));
    db.prepare("INSERT INTO audit VALUES (10, 1, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(1, forged.event)
        .bind(2, forged.gateway)
        .bind(3, forged.agent)
        .bind(4, forged.actor)
        .bind(5, forged.subject)
        .bind(6, forged.details)
        .bind_blob(7, previous.data(), 32)
        .bind_blob(8, hash.data(), 32)
        .run();
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 11);
}

TEST_F(AuditChainTest, ReorderedRecordsAreCaught) {
    fill(20);
    auto db = attacker();
    db.exec("UPDATE audit SET seq = 1000 WHERE seq = 3");
    db.exec("UPDATE audit SET seq = 3 WHERE seq = 4");
    db.exec("UPDATE audit SET seq = 4 WHERE seq = 1000");
    const auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 3);
}

TEST_F(AuditChainTest, ARewrittenChainIsCaughtByTheSignedCheckpoint) {
    fill(30, true);
    auto db = attacker();
    db.exec("UPDATE audit SET event = 'action.denied' WHERE seq = 12");
    rehash_from(db, 12);
    // Without the signature check the rewrite still differs from the
    // checkpoint's recorded hash.
    auto report = verify();
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 20);
    EXPECT_NE(report.problem.find("checkpoint"), std::string::npos) << report.problem;
    // Updating the checkpoint's hash too needs the key, or the MAC fails.
    auto head = db.prepare("SELECT hash FROM audit WHERE seq = 20");
    ASSERT_TRUE(head.step());
    const auto forged = head.blob(0);
    head.reset();
    db.prepare("UPDATE audit_checkpoints SET hash = ? WHERE seq = 20").bind_blob(1, forged.data(), forged.size()).run();
    report = verify(&key);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 20);
    EXPECT_NE(report.problem.find("signature"), std::string::npos) << report.problem;
}

TEST_F(AuditChainTest, TruncatingTheTailBeforeACheckpointIsCaught) {
    fill(30, true);
    attacker().exec("DELETE FROM audit WHERE seq > 15");
    const auto report = verify(&key);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 16);
    EXPECT_NE(report.problem.find("deleted"), std::string::npos) << report.problem;
}

TEST_F(AuditChainTest, RetentionLeavesAChainThatVerifiesAndCannotBeStretched) {
    StoreOptions options;
    options.database = dir.path() / "tameflared.db";
    options.checkpoint_key = key;
    options.retention.max_age = std::chrono::hours(24);
    options.retention.interval = std::chrono::hours(1000);  // only when asked
    {
        auto store = Store::open(options);
        for (int i = 1; i <= 20; ++i) {
            auto e = event(i);
            if (i <= 8) e.time = Clock::now() - std::chrono::hours(48);  // older than the limit
            store->audit(e);
        }
        store->flush();
        // The background pass may have run first; either way 1..8 are gone.
        store->apply_retention();
        store->audit(event(21));
    }
    auto report = verify(&key);
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.first_seq, 9);
    EXPECT_EQ(report.records, 14U);  // 9..20, retention.applied, 21

    // Deleting one more old record, and moving the anchor to match, is caught:
    // the chained retention record names the real anchor.
    auto db = attacker();
    std::string hash;
    {
        auto row = db.prepare("SELECT hash FROM audit WHERE seq = 9");
        ASSERT_TRUE(row.step());
        hash = row.blob(0);
    }
    db.exec("DELETE FROM audit WHERE seq = 9");
    db.prepare("UPDATE meta SET value = '9' WHERE name = 'audit_anchor_seq'").run();
    db.prepare("UPDATE meta SET value = ? WHERE name = 'audit_anchor_hash'")
        .bind(1, to_hex(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(hash.data()), hash.size())))
        .run();
    report = verify(&key);
    EXPECT_FALSE(report.ok);
    EXPECT_EQ(report.broken_seq, 10);
    EXPECT_NE(report.problem.find("retention"), std::string::npos) << report.problem;
}

}  // namespace
}  // namespace tameflare::store

namespace tameflare::store {
namespace {

// tf vault set appends to the chain from its own process while the daemon
// runs: each writer must continue the chain from whatever is last.
TEST_F(AuditChainTest, TwoWritersInterleaveWithoutBreakingTheChain) {
    StoreOptions options;
    options.database = dir.path() / "tameflared.db";
    auto daemon = Store::open(options);
    daemon->audit(event(1));
    daemon->flush();
    {
        auto cli = Store::open(options);
        cli->audit(AuditEvent{Clock::now(), "vault.set", "", "", "tf uid:0", "github", R"({"name":"github"})"});
    }
    daemon->audit(event(3));
    daemon->flush();
    const auto report = verify();
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.records, 3U);
}

}  // namespace
}  // namespace tameflare::store

namespace tameflare::store {
namespace {

// An operation that fails after appending leaves no trace: not its rows, not
// an advanced chain head that the next record would skip past.
TEST_F(AuditChainTest, AFailedOperationLeavesTheChainWhole) {
    StoreOptions options;
    options.database = dir.path() / "tameflared.db";
    auto store = Store::open(options);
    store->audit(event(1));
    EXPECT_THROW(store->write([](Database& db, AuditChain& chain) {
        chain.append(db, event(2));
        throw std::runtime_error("the caller changed its mind");
    }),
                 std::runtime_error);
    EXPECT_THROW(store->write([](Database& db, AuditChain& chain) {
        chain.append(db, event(2));
        db.exec("INSERT INTO no_such_table VALUES (1)");
    }),
                 StoreError);
    store->audit(event(3));
    store->flush();
    const auto report = verify();
    EXPECT_TRUE(report.ok) << report.problem;
    EXPECT_EQ(report.records, 2U);
}

}  // namespace
}  // namespace tameflare::store
