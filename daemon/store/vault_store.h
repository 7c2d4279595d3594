// The vault: credentials sealed with AES-256-GCM (vault_crypto.h), one row
// per name in the store. Values are write-only: list() shows names, the
// connector, times and a masked hint, never a value; only the proxy reads
// values (get()) to inject them.
#pragma once

#include "daemon/store/store.h"
#include "daemon/vault/vault_crypto.h"

#include <filesystem>
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

class Vault {
public:
    // The key for `store`: $CREDENTIALS_DIRECTORY/vault.key when systemd
    // passes one, else `key_file` (created 0600 on first start). A rotation
    // that was interrupted between committing the re-encrypted values and
    // renaming "<key_file>.new" over `key_file` is finished here.
    static vault::VaultKey load_key(const std::filesystem::path& key_file, Store& store);

    Vault(Store& store, vault::VaultKey key);

    // Seals and stores `secret` under `name` (replacing any value), with an
    // audit event "vault.set" naming the actor; never the value.
    void set(const std::string& name, const std::string& connector, std::string_view secret, const std::string& actor);
    // false when there was no such name. Audit event "vault.removed".
    bool remove(const std::string& name, const std::string& actor);
    [[nodiscard]] std::vector<VaultEntry> list() const;

    // The value, for the proxy; updates last_used in the background.
    // nullopt when absent or when it does not open with the key (the error
    // is logged: a tampered or swapped value is never used).
    std::optional<std::string> get(std::string_view name);

    // Re-encrypts every value with `next` in one transaction (audit event
    // "vault.rotated"); from then on this Vault uses `next`. Nothing changes
    // when any value fails to open with the current key.
    void rotate(const vault::VaultKey& next, const std::string& actor);
    // rotate() plus the key file: writes "<key_file>.new" (0600), rotates,
    // then renames it over `key_file`. Refused when the key came from
    // systemd credentials (it cannot be rewritten from here).
    void rotate_key_file(const std::filesystem::path& key_file, const std::string& actor);

    [[nodiscard]] const vault::VaultKey& key() const;

private:
    Store& store_;
    mutable std::mutex mutex_;  // guards key_ and reader_
    vault::VaultKey key_;
    mutable std::optional<Database> reader_;
};

}  // namespace tameflare::store
