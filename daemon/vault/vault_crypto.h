// The vault's cryptography: the key, and sealing one credential value with
// AES-256-GCM (OpenSSL EVP). Every value gets a fresh random 96-bit nonce,
// and the credential's name is bound as associated data, so a sealed value
// moved to another name, a changed byte, or the wrong key all fail to open.
//
// Sealed format: "TFV1" | key id (8 bytes) | nonce (12) | ciphertext | tag (16).
// The key id (the first 8 bytes of SHA-256 over the key) tells which key a
// value needs, so a rotation can be checked and resumed.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::vault {

// A key problem an operator can fix; what() says what, where and how.
class VaultError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class VaultKey {
public:
    static constexpr std::size_t kSize = 32;
    using Id = std::array<std::uint8_t, 8>;

    // A new random key.
    static VaultKey generate();
    // The key systemd passes as a credential ($CREDENTIALS_DIRECTORY/vault.key,
    // so LoadCredentialEncrypted= works) when `credentials_directory` is set
    // and holds one; otherwise `key_file`, created (0600, 32 random bytes)
    // when absent. A key file is 32 raw bytes or 64 hex digits; one readable
    // by group or others is refused. `credential_name` names the credential
    // (the audit checkpoint key uses "audit.key").
    static VaultKey load_or_create(const std::filesystem::path& key_file, const char* credentials_directory,
                                   std::string_view credential_name = "vault.key");
    // An existing key file, read only (never created): for readers such as
    // `tf audit verify`. Throws VaultError when it is absent, unreadable,
    // readable by group or others, or malformed.
    static VaultKey load(const std::filesystem::path& key_file);
    // Writes the key to `path` (0600, created exclusively), for rotation.
    void write(const std::filesystem::path& path) const;

    VaultKey(const VaultKey& other) = default;
    VaultKey& operator=(const VaultKey& other) = default;
    ~VaultKey();

    [[nodiscard]] const Id& id() const { return id_; }
    [[nodiscard]] const std::uint8_t* data() const { return bytes_.data(); }

private:
    explicit VaultKey(const std::array<std::uint8_t, kSize>& bytes);
    std::array<std::uint8_t, kSize> bytes_{};
    Id id_{};
};

using Sealed = std::vector<std::uint8_t>;

Sealed seal(const VaultKey& key, std::string_view name, std::string_view secret);

// nullopt when the value was sealed with another key, for another name, or
// was changed in any byte.
std::optional<std::string> open(const VaultKey& key, std::string_view name, std::span<const std::uint8_t> sealed);

// Which key a sealed value needs (nullopt: not a sealed value).
std::optional<VaultKey::Id> key_id(std::span<const std::uint8_t> sealed);

// A hint safe to show: the first 4 and last 2 characters of a value of at
// least 12, "****" otherwise ("ghp_****Xy").
std::string masked_hint(std::string_view secret);

}  // namespace tameflare::vault
