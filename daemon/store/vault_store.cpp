#include "daemon/store/vault_store.h"

#include "common/text.h"
#include "common/unique_fd.h"

#include "common/log.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>

namespace tameflare::store {

namespace fs = std::filesystem;
using vault::VaultError;
using vault::VaultKey;

namespace {

// last_used is a hint for operators, not a log: one write a minute per name.
constexpr auto kLastUsedInterval = std::chrono::seconds(60);
// A value that does not open is logged at most this often per name.
constexpr auto kFailureLogInterval = std::chrono::seconds(60);
constexpr std::size_t kMaxName = 128;

std::span<const std::uint8_t> as_bytes(const std::string& blob) {
    return {reinterpret_cast<const std::uint8_t*>(blob.data()), blob.size()};
}

std::string hex(const VaultKey::Id& id) {
    return to_hex(id);
}

// Wipes a decrypted value when it goes out of scope, however it leaves.
class Wipe {
public:
    explicit Wipe(std::string& text) : text_(text) {}
    Wipe(const Wipe&) = delete;
    Wipe& operator=(const Wipe&) = delete;
    ~Wipe() { OPENSSL_cleanse(text_.data(), text_.size()); }

private:
    std::string& text_;
};

// The writes of one vault operation, undone together when it throws:
// Store::write commits the rest of its batch even when one operation fails.
class Savepoint {
public:
    explicit Savepoint(Database& db) : db_(db) { db_.exec("SAVEPOINT vault"); }
    Savepoint(const Savepoint&) = delete;
    Savepoint& operator=(const Savepoint&) = delete;
    ~Savepoint() {
        if (released_) return;
        try {
            db_.exec("ROLLBACK TO vault");
            db_.exec("RELEASE vault");
        } catch (const StoreError&) {
            // The connection is failing; the writer's transaction fails with it.
        }
    }
    void release() {
        db_.exec("RELEASE vault");
        released_ = true;
    }

private:
    Database& db_;
    bool released_ = false;
};

// A rename or unlink is durable once its directory is synced.
void sync_directory(const fs::path& directory) {
    const UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
        throw VaultError("cannot sync the directory " + directory.string() + ": " + std::strerror(errno));
    }
}

// A key file may take the place of the old one only once the values that
// need it are on disk: with synchronous=NORMAL a commit survives a crash of
// the process, but sits in the WAL, unsynced, until the next checkpoint.
void sync_database(const fs::path& database) {
    for (const fs::path& file : {database, fs::path(database.string() + "-wal")}) {
        const UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0 && errno == ENOENT) continue;  // no WAL: everything is in the database file
        if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
            throw VaultError("cannot sync " + file.string() + " to disk: " + std::strerror(errno));
        }
    }
}

fs::path pending_path(const fs::path& key_file) {
    fs::path pending = key_file;
    pending += ".new";
    return pending;
}

fs::path parent_of(const fs::path& file) {
    return file.has_parent_path() ? file.parent_path() : fs::path(".");
}

// $CREDENTIALS_DIRECTORY/vault.key when systemd passes one.
std::optional<fs::path> systemd_credential(const char* credentials_directory) {
    if (credentials_directory == nullptr || *credentials_directory == '\0') return std::nullopt;
    fs::path credential = fs::path(credentials_directory) / "vault.key";
    std::error_code ec;
    if (!fs::exists(credential, ec)) return std::nullopt;
    return credential;
}

// The key in "<key_file>.new"; nullopt for a file cut short by a crash
// while it was written (no value can need such a key: rotation seals values
// only after the key file is synced).
std::optional<VaultKey> read_pending_key(const fs::path& pending) {
    std::error_code ec;
    const auto size = fs::file_size(pending, ec);
    if (ec || (size != VaultKey::kSize && size != 2 * VaultKey::kSize && size != 2 * VaultKey::kSize + 1)) {
        return std::nullopt;
    }
    return VaultKey::load_or_create(pending, nullptr);
}

std::int64_t count_sealed_with(Database& db, const VaultKey::Id& id) {
    // Sealed values start "TFV1" and then the 8-byte key id (vault_crypto.h).
    auto count = db.prepare("SELECT count(*) FROM vault WHERE substr(sealed, 5, 8) = ?");
    count.bind_blob(1, id.data(), id.size());
    count.step();
    return count.integer(0);
}

// Finishes or forgets a rotation that stopped before its key file was
// renamed: the key in "<key_file>.new" is kept exactly when values need it.
void recover_rotation(const fs::path& key_file, const fs::path& pending, Store& store) {
    const auto next = read_pending_key(pending);
    auto reader = store.reader();
    const std::int64_t sealed = next ? count_sealed_with(reader, next->id()) : 0;
    if (sealed > 0) {
        sync_database(store.path());
        std::error_code ec;
        fs::rename(pending, key_file, ec);
        if (ec) {
            throw VaultError("an interrupted key rotation left " + std::to_string(sealed) + " values sealed with " +
                             pending.string() + ", which cannot be renamed to " + key_file.string() + ": " +
                             ec.message() + "; move it there by hand (mv " + pending.string() + " " +
                             key_file.string() + ")");
        }
        sync_directory(parent_of(key_file));
        log(LogLevel::notice, "vault: finished an interrupted key rotation",
            {{"KEY_FILE", key_file.string()}, {"KEY_ID", hex(next->id())}});
        return;
    }
    std::error_code ec;
    fs::remove(pending, ec);
    if (ec) {
        throw VaultError("cannot remove " + pending.string() +
                         " (left by a key rotation that did not commit): " + ec.message() + "; remove it by hand");
    }
    sync_directory(parent_of(pending));
    log(LogLevel::notice, "vault: removed the key of a rotation that did not commit", {{"KEY_FILE", pending.string()}});
}

std::string not_opening(const std::string& name, const std::string& sealed, const VaultKey& key) {
    const auto id = vault::key_id(as_bytes(sealed));
    std::string why;
    if (!id) {
        why = "it is not a sealed value";
    } else if (*id != key.id()) {
        why = "it was sealed with key " + hex(*id);
    } else {
        why = "it was changed or moved from another name";
    }
    return "the vault value \"" + name + "\" does not open with the current key " + hex(key.id()) + " (" + why + ")";
}

}  // namespace

// ---------------------------------------------------------------------------
// Without a key

std::vector<VaultEntry> list_vault(Database& db) {
    std::vector<VaultEntry> entries;
    auto rows = db.prepare("SELECT name, connector, hint, created, updated, last_used FROM vault ORDER BY name");
    while (rows.step()) {
        VaultEntry entry{
            rows.text(0), rows.text(1), rows.text(2), from_micros(rows.integer(3)), from_micros(rows.integer(4)),
            std::nullopt};
        if (!rows.is_null(5)) entry.last_used = from_micros(rows.integer(5));
        entries.push_back(std::move(entry));
    }
    return entries;
}

bool remove_from_vault(Store& store, const std::string& name, const std::string& actor) {
    bool removed = false;
    store.write([&](Database& db, AuditChain& chain) {
        Savepoint savepoint(db);
        auto remove = db.prepare("DELETE FROM vault WHERE name = ?");
        remove.bind(1, name).run();
        removed = db.scalar("SELECT changes()") > 0;
        if (removed) {
            const nlohmann::json details = {{"name", name}};
            chain.append(db, AuditEvent{Clock::now(), "vault.removed", "", "", actor, name, details.dump()});
        }
        savepoint.release();
    });
    return removed;
}

// ---------------------------------------------------------------------------
// The key

bool Vault::valid_name(std::string_view name) {
    return is_name(name, kMaxName, Letters::any_case, "_.-");
}

VaultKey Vault::load_key(const fs::path& key_file, Store& store, KeyAccess access) {
    const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
    if (systemd_credential(credentials)) return VaultKey::load_or_create(key_file, credentials);

    const fs::path pending = pending_path(key_file);
    std::error_code ec;
    if (fs::exists(pending, ec)) {
        if (access == KeyAccess::shared) {
            throw VaultError(pending.string() +
                             " exists: a key rotation is under way or was interrupted; try again once tf vault "
                             "rotate has finished (a rotation interrupted earlier is finished when tameflared or tf "
                             "vault rotate starts)");
        }
        recover_rotation(key_file, pending, store);
    }
    if (!fs::exists(key_file, ec) && !ec) {
        auto reader = store.reader();
        const std::int64_t held = reader.scalar("SELECT count(*) FROM vault");
        if (held > 0) {
            throw VaultError("the vault key " + key_file.string() + " does not exist, but " + store.path().string() +
                             " holds " + std::to_string(held) +
                             " values sealed with it; restore the key file from backup (a new key cannot open "
                             "them), or remove the values (tf vault remove NAME) to start over");
        }
    }
    return VaultKey::load_or_create(key_file, credentials);
}

Vault::Vault(Store& store, const VaultKey& key) : store_(store), key_(key) {}

VaultKey Vault::key() const {
    const std::lock_guard lock(mutex_);
    return key_;
}

// ---------------------------------------------------------------------------
// Values

void Vault::set(const std::string& name, const std::string& connector, std::string_view secret,
                const std::string& actor) {
    if (!valid_name(name)) {
        throw VaultError("invalid credential name \"" + name +
                         "\": use 1 to 128 letters, digits, '_', '.' or '-' (github_token, openai.prod)");
    }
    if (secret.empty()) throw VaultError("refusing to store an empty value for \"" + name + "\"");
    const std::lock_guard writing(writing_);
    const VaultKey key = this->key();
    const vault::Sealed sealed = vault::seal(key, name, secret);
    const std::string hint = vault::masked_hint(secret);
    const std::int64_t now = to_micros(Clock::now());
    store_.write([&](Database& db, AuditChain& chain) {
        {
            auto others =
                db.prepare("SELECT count(*), min(name) FROM vault WHERE name != ?1 AND substr(sealed, 5, 8) != ?2");
            others.bind(1, name).bind_blob(2, key.id().data(), key.id().size());
            others.step();
            if (others.integer(0) > 0) {
                throw VaultError(std::to_string(others.integer(0)) + " values in the vault (\"" + others.text(1) +
                                 "\" among them) are sealed with another key than " + hex(key.id()) +
                                 ", the one loaded here; nothing was stored for \"" + name +
                                 "\": if the key was rotated meanwhile, run the command again; else restore "
                                 "the key file that opens them");
            }
        }
        Savepoint savepoint(db);
        auto upsert = db.prepare(
            "INSERT INTO vault (name, sealed, connector, hint, created, updated, last_used) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL) "
            "ON CONFLICT (name) DO UPDATE SET sealed = ?2, connector = ?3, hint = ?4, updated = ?5, last_used = NULL");
        upsert.bind(1, name).bind_blob(2, sealed.data(), sealed.size()).bind(3, connector).bind(4, hint).bind(5, now);
        upsert.run();
        const nlohmann::json details = {{"name", name}, {"connector", connector}, {"key_id", hex(key.id())}};
        chain.append(db, AuditEvent{Clock::now(), "vault.set", "", "", actor, name, details.dump()});
        savepoint.release();
    });
    const std::lock_guard lock(mutex_);
    // The new value has not been used: the next get() records its first use.
    if (const auto it = last_used_.find(name); it != last_used_.end()) last_used_.erase(it);
}

bool Vault::remove(const std::string& name, const std::string& actor) {
    const bool removed = remove_from_vault(store_, name, actor);
    const std::lock_guard lock(mutex_);
    if (const auto it = last_used_.find(name); it != last_used_.end()) last_used_.erase(it);
    return removed;
}

std::vector<VaultEntry> Vault::list() const {
    const std::lock_guard lock(mutex_);
    try {
        if (!reader_) reader_.emplace(store_.reader());
        return list_vault(*reader_);
    } catch (const StoreError&) {
        reader_.reset();  // the next call opens a fresh connection
        throw;
    }
}

std::optional<std::string> Vault::get(std::string_view name) {
    const std::lock_guard lock(mutex_);
    std::string sealed;
    try {
        if (!reader_) reader_.emplace(store_.reader());
        auto row = reader_->prepare("SELECT sealed FROM vault WHERE name = ?");
        row.bind(1, name);
        if (!row.step()) return std::nullopt;
        sealed = row.blob(0);
    } catch (const StoreError&) {
        reader_.reset();
        throw;
    }
    const auto id = vault::key_id(as_bytes(sealed));
    // While a rotation commits, values may already be sealed with the next key.
    const VaultKey& key = next_ && id == next_->id() ? *next_ : key_;
    auto value = vault::open(key, name, as_bytes(sealed));
    const auto now = std::chrono::steady_clock::now();
    if (!value) {
        auto [logged, first] = failure_logged_.try_emplace(std::string(name), now);
        if (first || now - logged->second >= kFailureLogInterval) {
            logged->second = now;
            log(LogLevel::error,
                "vault: " + not_opening(std::string(name), sealed, key) +
                    "; it is not used until it is stored again (tf vault set)",
                {{"CREDENTIAL", name}});
        }
        return std::nullopt;
    }
    auto [written, first] = last_used_.try_emplace(std::string(name), now);
    if (first || now - written->second >= kLastUsedInterval) {
        written->second = now;
        store_.later([name = std::string(name), when = to_micros(Clock::now())](Database& db, AuditChain&) {
            auto update = db.prepare("UPDATE vault SET last_used = ? WHERE name = ?");
            update.bind(1, when).bind(2, name).run();
        });
    }
    return value;
}

// ---------------------------------------------------------------------------
// Rotation

void Vault::rotate(const VaultKey& next, const std::string& actor) {
    const std::lock_guard writing(writing_);
    rotate_values(next, actor);
}

std::size_t Vault::rotate_values(const VaultKey& next, const std::string& actor) {
    const VaultKey current = key();
    {
        const std::lock_guard lock(mutex_);
        next_ = next;
    }
    std::size_t count = 0;
    try {
        store_.write([&](Database& db, AuditChain& chain) {
            // Everything is opened and sealed again before anything is written.
            std::vector<std::pair<std::string, vault::Sealed>> resealed;
            {
                auto rows = db.prepare("SELECT name, sealed FROM vault ORDER BY name");
                while (rows.step()) {
                    std::string name = rows.text(0);
                    const std::string sealed = rows.blob(1);
                    auto value = vault::open(current, name, as_bytes(sealed));
                    if (!value) {
                        throw StoreError(not_opening(name, sealed, current) +
                                         "; nothing was changed: store it again (tf vault set " + name +
                                         ") or remove it (tf vault remove " + name + "), then rotate again");
                    }
                    const Wipe wipe(*value);
                    auto resealed_value = vault::seal(next, name, *value);
                    resealed.emplace_back(std::move(name), std::move(resealed_value));
                }
            }
            Savepoint savepoint(db);
            auto update = db.prepare("UPDATE vault SET sealed = ? WHERE name = ?");
            for (const auto& [name, sealed] : resealed) {
                update.bind_blob(1, sealed.data(), sealed.size()).bind(2, name).run();
            }
            const nlohmann::json details = {
                {"count", resealed.size()}, {"from_key", hex(current.id())}, {"to_key", hex(next.id())}};
            chain.append(db, AuditEvent{Clock::now(), "vault.rotated", "", "", actor, "", details.dump()});
            savepoint.release();
            count = resealed.size();
        });
    } catch (...) {
        const std::lock_guard lock(mutex_);
        next_.reset();
        throw;
    }
    const std::lock_guard lock(mutex_);
    key_ = next;
    next_.reset();
    return count;
}

std::size_t Vault::rotate_key_file(const fs::path& key_file, const std::string& actor) {
    if (const auto credential = systemd_credential(std::getenv("CREDENTIALS_DIRECTORY"))) {
        throw VaultError("the vault key comes from the systemd credential " + credential->string() +
                         ", which cannot be rewritten from here; rotate with a key file (run tf vault rotate "
                         "without $CREDENTIALS_DIRECTORY, so it uses " +
                         key_file.string() + "), then encrypt the new key with systemd-creds encrypt");
    }
    const std::lock_guard writing(writing_);
    const fs::path pending = pending_path(key_file);
    std::error_code ec;
    if (fs::exists(pending, ec)) {
        // Only a key that no value needs may go (load_key() finishes the others).
        const auto stale = read_pending_key(pending);
        auto reader = store_.reader();
        if (stale && count_sealed_with(reader, stale->id()) > 0) {
            throw VaultError("values in the vault are sealed with " + pending.string() +
                             ": a key rotation was interrupted; load the key with Vault::load_key (restart "
                             "tameflared, or run tf vault rotate again), which finishes it");
        }
        fs::remove(pending);
    }
    const VaultKey next = VaultKey::generate();
    next.write(pending);
    // The new key must be on disk before any value needs it.
    sync_directory(parent_of(pending));
    std::size_t count = 0;
    try {
        count = rotate_values(next, actor);
    } catch (...) {
        // Nothing was committed (or it is unknown): the key stays unless no value needs it.
        try {
            auto reader = store_.reader();
            if (count_sealed_with(reader, next.id()) == 0) fs::remove(pending, ec);
        } catch (const StoreError&) {
            // Kept: load_key() decides once the database can be read.
        }
        throw;
    }
    try {
        sync_database(store_.path());
    } catch (const VaultError& error) {
        throw VaultError(std::string(error.what()) + "; the values are re-encrypted with the key in " +
                         pending.string() + ", which replaces " + key_file.string() +
                         " when tameflared or tf vault rotate next starts");
    }
    fs::rename(pending, key_file, ec);
    if (ec) {
        throw VaultError("the values are re-encrypted with the key in " + pending.string() +
                         ", but it cannot be renamed to " + key_file.string() + ": " + ec.message() +
                         "; move it there by hand (mv " + pending.string() + " " + key_file.string() +
                         ") before tameflared starts");
    }
    sync_directory(parent_of(key_file));
    return count;
}

}  // namespace tameflare::store
