// The vault on a real SQLite database in a temporary directory: values go in
// and come out only with the right key, for the right name, unchanged;
// rotation re-encrypts all or nothing and survives an interruption.
#include "daemon/store/vault_store.h"
#include "daemon/store/state_lock.h"

#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

namespace tameflare::store {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using vault::VaultError;
using vault::VaultKey;

constexpr const char* kActor = "test uid:0 pid:1";

std::span<const std::uint8_t> bytes(const std::string& blob) {
    return {reinterpret_cast<const std::uint8_t*>(blob.data()), blob.size()};
}

fs::path pending(const fs::path& key_file) {
    return fs::path(key_file.string() + ".new");
}

unsigned mode_of(const fs::path& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 07777;
}

// Sets (or clears) $CREDENTIALS_DIRECTORY for one test.
class CredentialsDirectory {
public:
    explicit CredentialsDirectory(const char* value) {
        if (value == nullptr) {
            ::unsetenv("CREDENTIALS_DIRECTORY");
        } else {
            ::setenv("CREDENTIALS_DIRECTORY", value, 1);
        }
    }
    CredentialsDirectory(const CredentialsDirectory&) = delete;
    CredentialsDirectory& operator=(const CredentialsDirectory&) = delete;
    ~CredentialsDirectory() { ::unsetenv("CREDENTIALS_DIRECTORY"); }
};

class VaultStore : public ::testing::Test {
protected:
    CredentialsDirectory no_credentials_{nullptr};
    TempDir dir_{"tf-vault"};
    fs::path database_ = dir_.path() / "tameflared.db";
    fs::path key_file_ = dir_.path() / "vault.key";
    std::unique_ptr<Store> store_ = Store::open(StoreOptions{.database = database_});

    Vault open_vault() { return Vault(*store_, Vault::load_key(key_file_, *store_)); }

    std::string sealed(const std::string& name) {
        auto db = store_->reader();
        auto row = db.prepare("SELECT sealed FROM vault WHERE name = ?");
        row.bind(1, name);
        return row.step() ? row.blob(0) : std::string();
    }

    // Written behind the store's back, through a connection of its own.
    void put_sealed(const std::string& name, const std::string& blob) {
        auto db = Database::open(database_);
        auto update = db.prepare("UPDATE vault SET sealed = ? WHERE name = ?");
        update.bind_blob(1, blob.data(), blob.size()).bind(2, name).run();
    }

    struct Event {
        std::string event, actor, subject;
        nlohmann::json details;
    };
    std::vector<Event> audit(const std::string& event) {
        store_->flush();
        auto db = store_->reader();
        auto rows = db.prepare("SELECT event, actor, subject, details FROM audit WHERE event = ? ORDER BY seq");
        rows.bind(1, event);
        std::vector<Event> events;
        while (rows.step()) {
            events.push_back({rows.text(0), rows.text(1), rows.text(2), nlohmann::json::parse(rows.text(3))});
        }
        return events;
    }

    std::optional<VaultEntry> entry(const Vault& vault, const std::string& name) {
        for (auto& found : vault.list()) {
            if (found.name == name) return found;
        }
        return std::nullopt;
    }
};

TEST_F(VaultStore, AValueComesBackAsItWasStored) {
    auto vault = open_vault();
    vault.set("github_token", "github", "ghp_0123456789abcdefXY", kActor);
    EXPECT_EQ(vault.get("github_token"), "ghp_0123456789abcdefXY");
    EXPECT_EQ(vault.get("absent"), std::nullopt);

    vault.set("github_token", "github", "ghp_replaced_value_42", kActor);
    EXPECT_EQ(vault.get("github_token"), "ghp_replaced_value_42");
}

TEST_F(VaultStore, TheKeyFileIsCreatedOwnerOnly) {
    open_vault();
    ASSERT_TRUE(fs::exists(key_file_));
    EXPECT_EQ(mode_of(key_file_), 0600u);
}

TEST_F(VaultStore, AnotherKeyDoesNotOpenAValue) {
    auto vault = open_vault();
    vault.set("openai", "openai", "sk-proj-0123456789abcdef", kActor);
    Vault other(*store_, VaultKey::generate());
    EXPECT_EQ(other.get("openai"), std::nullopt);
}

TEST_F(VaultStore, ATamperedValueDoesNotOpen) {
    auto vault = open_vault();
    vault.set("stripe", "stripe", "sk_live_0123456789abcdef", kActor);
    std::string blob = sealed("stripe");
    ASSERT_GT(blob.size(), 30u);
    blob[26] = static_cast<char>(blob[26] ^ 0x01);  // one bit of the ciphertext
    put_sealed("stripe", blob);
    EXPECT_EQ(vault.get("stripe"), std::nullopt);
}

TEST_F(VaultStore, ValuesSwappedBetweenNamesDoNotOpen) {
    auto vault = open_vault();
    vault.set("alpha", "", "value-of-alpha-0123456", kActor);
    vault.set("beta", "", "value-of-beta-98765432", kActor);
    const std::string alpha = sealed("alpha");
    const std::string beta = sealed("beta");
    put_sealed("alpha", beta);
    put_sealed("beta", alpha);
    EXPECT_EQ(vault.get("alpha"), std::nullopt);
    EXPECT_EQ(vault.get("beta"), std::nullopt);
}

TEST_F(VaultStore, ListShowsAMaskedHintAndNeverTheValue) {
    const std::string value = "ghp_0123456789abcdefXY";
    auto vault = open_vault();
    const auto before = Clock::now();
    vault.set("github_token", "github", value, kActor);
    const auto listed = vault.list();
    ASSERT_EQ(listed.size(), 1u);
    const auto& found = listed[0];
    EXPECT_EQ(found.name, "github_token");
    EXPECT_EQ(found.connector, "github");
    EXPECT_EQ(found.hint, "ghp_****XY");
    for (const auto& field : {found.name, found.connector, found.hint}) {
        EXPECT_EQ(field.find(value), std::string::npos);
        EXPECT_EQ(field.find("0123456789"), std::string::npos);
    }
    EXPECT_GE(found.created, before - std::chrono::seconds(1));
    EXPECT_EQ(found.created, found.updated);
    EXPECT_EQ(found.last_used, std::nullopt);

    auto db = store_->reader();
    EXPECT_EQ(list_vault(db).size(), 1u);
    // Nor is it anywhere in the rows as text.
    auto rows = db.prepare("SELECT name, connector, hint FROM vault");
    while (rows.step()) {
        for (int column = 0; column < 3; ++column) EXPECT_EQ(rows.text(column).find(value), std::string::npos);
    }
}

TEST_F(VaultStore, GetRecordsTheLastUseAtMostOnceAMinute) {
    auto vault = open_vault();
    vault.set("token", "", "a-token-of-some-length", kActor);
    ASSERT_TRUE(vault.get("token"));
    store_->flush();
    const auto first = entry(vault, "token")->last_used;
    ASSERT_TRUE(first.has_value());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(vault.get("token"));
    store_->flush();
    EXPECT_EQ(entry(vault, "token")->last_used, first);
}

TEST_F(VaultStore, SetIsAuditedWithoutTheValueOrItsHint) {
    const std::string value = "xoxb-0123456789-abcdefghij";
    auto vault = open_vault();
    vault.set("slack", "slack", value, kActor);
    const auto events = audit("vault.set");
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].actor, kActor);
    EXPECT_EQ(events[0].subject, "slack");
    EXPECT_EQ(events[0].details["name"], "slack");
    EXPECT_EQ(events[0].details["connector"], "slack");
    EXPECT_EQ(events[0].details["key_id"], to_hex(vault.key().id()));
    const std::string text = events[0].details.dump();
    EXPECT_EQ(text.find(value), std::string::npos);
    EXPECT_EQ(text.find(vault::masked_hint(value)), std::string::npos);
}

TEST_F(VaultStore, RemoveDeletesTheValueAndIsAudited) {
    auto vault = open_vault();
    vault.set("gone", "", "soon-to-be-removed-123", kActor);
    EXPECT_TRUE(vault.remove("gone", kActor));
    EXPECT_FALSE(vault.remove("gone", kActor));
    EXPECT_EQ(vault.get("gone"), std::nullopt);
    EXPECT_TRUE(vault.list().empty());
    const auto events = audit("vault.removed");
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].subject, "gone");
}

TEST_F(VaultStore, InvalidNamesAndEmptyValuesAreRefused) {
    auto vault = open_vault();
    for (const char* name : {"", "has space", "slash/name", "quote\"", "ünicode"}) {
        EXPECT_THROW(vault.set(name, "", "a-value-long-enough", kActor), VaultError) << name;
    }
    EXPECT_THROW(vault.set(std::string(129, 'a'), "", "a-value-long-enough", kActor), VaultError);
    EXPECT_NO_THROW(vault.set(std::string(128, 'a'), "", "a-value-long-enough", kActor));
    EXPECT_NO_THROW(vault.set("A-z_0.9", "", "a-value-long-enough", kActor));
    EXPECT_THROW(vault.set("empty", "", "", kActor), VaultError);
    EXPECT_EQ(vault.get("empty"), std::nullopt);
}

TEST_F(VaultStore, AStaleKeyCannotAddValuesNextToOthers) {
    auto vault = open_vault();
    vault.set("first", "", "sealed-with-the-real-key", kActor);
    Vault stale(*store_, VaultKey::generate());
    EXPECT_THROW(stale.set("second", "", "would-never-open-again", kActor), VaultError);
    EXPECT_EQ(sealed("second"), "");
    EXPECT_TRUE(audit("vault.set").size() == 1u);
}

TEST_F(VaultStore, AMissingKeyFileIsNotReplacedWhileValuesNeedIt) {
    {
        auto vault = open_vault();
        vault.set("kept", "", "needs-the-original-key", kActor);
    }
    fs::remove(key_file_);
    try {
        Vault::load_key(key_file_, *store_);
        FAIL() << "a new key was made for values it cannot open";
    } catch (const VaultError& error) {
        EXPECT_NE(std::string(error.what()).find("restore the key file from backup"), std::string::npos)
            << error.what();
    }
    EXPECT_FALSE(fs::exists(key_file_));
}

// ---------------------------------------------------------------------------
// Rotation

class VaultRotation : public VaultStore {};

TEST_F(VaultRotation, EveryValueIsSealedAgainWithTheNewKey) {
    auto vault = open_vault();
    const std::map<std::string, std::string> values = {
        {"one", "first-value-0123456789"}, {"two", "second-value-0123456789"}, {"three", "third-value-0123456789"}};
    for (const auto& [name, value] : values) vault.set(name, "", value, kActor);
    const VaultKey old_key = vault.key();

    EXPECT_EQ(vault.rotate_key_file(key_file_, kActor), 3u);

    const VaultKey new_key = vault.key();
    EXPECT_NE(new_key.id(), old_key.id());
    Vault with_old_key(*store_, old_key);
    for (const auto& [name, value] : values) {
        EXPECT_EQ(vault::key_id(bytes(sealed(name))), new_key.id()) << name;
        EXPECT_EQ(vault.get(name), value);
        EXPECT_EQ(with_old_key.get(name), std::nullopt) << name;
    }
    // The key file holds the new key; nothing is left beside it.
    EXPECT_EQ(VaultKey::load_or_create(key_file_, nullptr).id(), new_key.id());
    EXPECT_FALSE(fs::exists(pending(key_file_)));
    EXPECT_EQ(mode_of(key_file_), 0600u);

    const auto events = audit("vault.rotated");
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].actor, kActor);
    EXPECT_EQ(events[0].details["count"], 3);
    EXPECT_EQ(events[0].details["from_key"], to_hex(old_key.id()));
    EXPECT_EQ(events[0].details["to_key"], to_hex(new_key.id()));
}

TEST_F(VaultRotation, OneValueThatDoesNotOpenChangesNothing) {
    auto vault = open_vault();
    vault.set("good", "", "a-good-value-0123456789", kActor);
    vault.set("broken", "", "a-broken-value-0123456", kActor);
    vault.set("other", "", "another-value-0123456789", kActor);
    std::string blob = sealed("broken");
    blob.back() = static_cast<char>(blob.back() ^ 0x80);  // the tag
    put_sealed("broken", blob);
    const VaultKey old_key = vault.key();
    const std::string good_before = sealed("good");

    try {
        vault.rotate(VaultKey::generate(), kActor);
        FAIL() << "rotated past a value that does not open";
    } catch (const StoreError& error) {
        const std::string what = error.what();
        EXPECT_NE(what.find("\"broken\""), std::string::npos) << what;
        EXPECT_NE(what.find("nothing was changed"), std::string::npos) << what;
    }
    EXPECT_EQ(vault.key().id(), old_key.id());
    EXPECT_EQ(sealed("good"), good_before);
    EXPECT_EQ(sealed("broken"), blob);
    EXPECT_EQ(vault.get("good"), "a-good-value-0123456789");
    EXPECT_TRUE(audit("vault.rotated").empty());

    // The same through the key file: the file stays, nothing is left beside it.
    EXPECT_THROW(vault.rotate_key_file(key_file_, kActor), StoreError);
    EXPECT_EQ(VaultKey::load_or_create(key_file_, nullptr).id(), old_key.id());
    EXPECT_FALSE(fs::exists(pending(key_file_)));
    EXPECT_EQ(sealed("good"), good_before);
}

TEST_F(VaultRotation, AnInterruptedRotationIsFinishedWhenTheKeyIsLoaded) {
    auto vault = open_vault();
    vault.set("one", "", "first-value-0123456789", kActor);
    vault.set("two", "", "second-value-0123456789", kActor);
    // rotate_key_file() up to its rename: the values need a key only in ".new".
    const VaultKey next = VaultKey::generate();
    next.write(pending(key_file_));
    vault.rotate(next, kActor);

    const VaultKey loaded = Vault::load_key(key_file_, *store_);
    EXPECT_EQ(loaded.id(), next.id());
    EXPECT_FALSE(fs::exists(pending(key_file_)));
    EXPECT_EQ(VaultKey::load_or_create(key_file_, nullptr).id(), next.id());
    Vault reopened(*store_, loaded);
    EXPECT_EQ(reopened.get("one"), "first-value-0123456789");
    EXPECT_EQ(reopened.get("two"), "second-value-0123456789");
}

TEST_F(VaultRotation, ANewKeyNoValueNeedsIsRemovedWhenTheKeyIsLoaded) {
    auto vault = open_vault();
    vault.set("one", "", "first-value-0123456789", kActor);
    const VaultKey current = vault.key();
    // Crashed before the transaction committed.
    VaultKey::generate().write(pending(key_file_));
    EXPECT_EQ(Vault::load_key(key_file_, *store_).id(), current.id());
    EXPECT_FALSE(fs::exists(pending(key_file_)));

    // Crashed while writing the new key itself.
    std::ofstream(pending(key_file_)) << "0123";
    EXPECT_EQ(Vault::load_key(key_file_, *store_).id(), current.id());
    EXPECT_FALSE(fs::exists(pending(key_file_)));
    EXPECT_EQ(vault.get("one"), "first-value-0123456789");
}

TEST_F(VaultRotation, SharedAccessLeavesANewKeyAloneAndRefuses) {
    open_vault();
    VaultKey::generate().write(pending(key_file_));
    EXPECT_THROW(Vault::load_key(key_file_, *store_, KeyAccess::shared), VaultError);
    EXPECT_TRUE(fs::exists(pending(key_file_)));
}

TEST_F(VaultRotation, AKeyFromSystemdCredentialsIsNotRotated) {
    auto vault = open_vault();
    vault.set("one", "", "first-value-0123456789", kActor);
    const fs::path credentials = dir_.path() / "credentials";
    fs::create_directory(credentials);
    fs::copy_file(key_file_, credentials / "vault.key");
    const CredentialsDirectory systemd(credentials.c_str());
    try {
        vault.rotate_key_file(key_file_, kActor);
        FAIL() << "rotated a key systemd passes";
    } catch (const VaultError& error) {
        EXPECT_NE(std::string(error.what()).find("systemd"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(fs::exists(pending(key_file_)));
    EXPECT_TRUE(audit("vault.rotated").empty());
}

TEST_F(VaultRotation, ReadersNeverMissAValueWhileKeysRotate) {
    auto vault = open_vault();
    vault.set("busy", "", "read-while-rotating-0123", kActor);
    std::atomic<bool> stop = false;
    std::atomic<int> misses = 0;
    std::atomic<int> reads = 0;
    std::vector<std::thread> readers;
    readers.reserve(2);
    for (int i = 0; i < 2; ++i) {
        readers.emplace_back([&] {
            while (!stop) {
                if (vault.get("busy") != "read-while-rotating-0123") ++misses;
                ++reads;
            }
        });
    }
    for (int round = 0; round < 5; ++round) vault.rotate_key_file(key_file_, kActor);
    stop = true;
    for (auto& reader : readers) reader.join();
    EXPECT_EQ(misses, 0) << "of " << reads << " reads";
    EXPECT_EQ(audit("vault.rotated").size(), 5u);
}

// ---------------------------------------------------------------------------
// The state lock

TEST(VaultStateLock, ASecondHolderInTheSameProcessIsRefused) {
    TempDir dir("tf-lock");
    auto first = StateLock::try_acquire(dir.path());
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->path(), dir.path() / "tameflared.lock");
    EXPECT_EQ(mode_of(first->path()), 0600u);
    EXPECT_FALSE(StateLock::try_acquire(dir.path()).has_value());

    // Moving keeps the lock; releasing gives it up.
    StateLock moved = std::move(*first);
    first.reset();
    EXPECT_FALSE(StateLock::try_acquire(dir.path()).has_value());
    { const StateLock released = std::move(moved); }
    EXPECT_TRUE(StateLock::try_acquire(dir.path()).has_value());
}

// The child reports whether it got the lock: exit 0 yes, 1 no, 2 error.
int child_acquires(const fs::path& state_dir) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        try {
            ::_exit(StateLock::try_acquire(state_dir) ? 0 : 1);
        } catch (...) {
            ::_exit(2);
        }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(VaultStateLock, AnotherProcessIsRefusedUntilTheHolderLetsGo) {
    TempDir dir("tf-lock");
    {
        const auto held = StateLock::try_acquire(dir.path());
        ASSERT_TRUE(held.has_value());
        EXPECT_EQ(child_acquires(dir.path()), 1);
    }
    EXPECT_EQ(child_acquires(dir.path()), 0);
}

TEST(VaultStateLock, AMissingStateDirectoryIsAnError) {
    TempDir dir("tf-lock");
    try {
        StateLock::try_acquire(dir.path() / "absent");
        FAIL() << "locked in a directory that does not exist";
    } catch (const StoreError& error) {
        EXPECT_NE(std::string(error.what()).find("--state-dir"), std::string::npos) << error.what();
    }
}

}  // namespace
}  // namespace tameflare::store
