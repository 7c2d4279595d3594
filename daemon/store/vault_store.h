// The vault: credentials sealed with AES-256-GCM (vault_crypto.h), one row
// per name in the store. Values are write-only: list() shows names, the
// connector, times and a masked hint, never a value; only the proxy reads
// values (get()) to inject them.
#pragma once

#include "daemon/store/store.h"
#include "daemon/vault/vault_crypto.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::store {

struct VaultEntry {
    std::string name;
    std::string connector;
    std::string hint;  // masked_hint() of the value
    Clock::time_point created;
    Clock::time_point updated;
    std::optional<Clock::time_point> last_used;
};

// What every name in the vault looks like, from any connection (a read-only
// one will do: `tf vault list` needs neither the key nor the writer).
std::vector<VaultEntry> list_vault(Database& db);
// Removes `name`, with an audit event "vault.removed"; false when there was
// no such name. Needs no key.
bool remove_from_vault(Store& store, const std::string& name, const std::string& actor);

// Who else may be using the key file while load_key() runs.
enum class KeyAccess {
    // The caller holds the StateLock (state_lock.h): nobody else rotates, so
    // what an interrupted rotation left behind is finished or removed.
    exclusive,
    // Another process may hold it (tf vault set while tameflared runs): a
    // "<key_file>.new" may belong to a rotation under way and is refused.
    shared,
};

class Vault {
public:
    // Names are 1 to 128 of A-Z a-z 0-9 _ . - (they appear in logs and
    // connector configuration, so nothing that needs quoting).
    static bool valid_name(std::string_view name);

    // The key for `store`: $CREDENTIALS_DIRECTORY/vault.key when systemd
    // passes one, else `key_file` (created 0600 on first start). A rotation
    // that was interrupted between committing the re-encrypted values and
    // renaming "<key_file>.new" over `key_file` is finished here (exclusive
    // access only). A missing key file is refused, not re-created, while the
    // vault holds values (a new key could never open them). Throws
    // vault::VaultError or StoreError.
    static vault::VaultKey load_key(const std::filesystem::path& key_file, Store& store,
                                    KeyAccess access = KeyAccess::exclusive);

    Vault(Store& store, const vault::VaultKey& key);

    // Seals and stores `secret` under `name` (replacing any value), with an
    // audit event "vault.set" naming the actor; never the value. Refused
    // (vault::VaultError) for an invalid name, an empty value, or when other
    // values in the vault are sealed with another key (this process has a
    // stale key: a value sealed now could not be opened next to them).
    void set(const std::string& name, const std::string& connector, std::string_view secret, const std::string& actor);
    // false when there was no such name. Audit event "vault.removed".
    bool remove(const std::string& name, const std::string& actor);
    [[nodiscard]] std::vector<VaultEntry> list() const;

    // The value, for the proxy; updates last_used in the background (at
    // most once a minute per name). nullopt when absent or when it does not
    // open with the key (the error is logged: a tampered or swapped value is
    // never used). Throws StoreError when the database cannot be read.
    std::optional<std::string> get(std::string_view name);

    // Re-encrypts every value with `next` in one transaction (audit event
    // "vault.rotated"); from then on this Vault uses `next`. Nothing changes
    // when any value fails to open with the current key (StoreError naming it).
    void rotate(const vault::VaultKey& next, const std::string& actor);
    // rotate() plus the key file: writes "<key_file>.new" (0600), rotates,
    // then renames it over `key_file`. Refused when the key came from
    // systemd credentials (it cannot be rewritten from here). Returns how
    // many values were re-encrypted.
    std::size_t rotate_key_file(const std::filesystem::path& key_file, const std::string& actor);

    // A copy: the key may change under a concurrent rotate().
    [[nodiscard]] vault::VaultKey key() const;

private:
    std::size_t rotate_values(const vault::VaultKey& next, const std::string& actor);

    Store& store_;
    std::mutex writing_;        // one set/rotate at a time: a value is never sealed with a key being replaced
    mutable std::mutex mutex_;  // guards key_, next_, reader_ and last_used_
    vault::VaultKey key_;
    std::optional<vault::VaultKey> next_;  // while a rotation commits: values may already need it
    mutable std::optional<Database> reader_;
    using Times = std::map<std::string, std::chrono::steady_clock::time_point, std::less<>>;
    Times last_used_;       // when last_used was last written, per name
    Times failure_logged_;  // when a value that does not open was last logged, per name
};

}  // namespace tameflare::store
