#include "daemon/vault/vault_crypto.h"

#include "common/text.h"
#include "common/unique_fd.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

namespace tameflare::vault {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMagic = "TFV1";
constexpr std::size_t kNonce = 12;
constexpr std::size_t kTag = 16;
constexpr std::size_t kHeader = 4 + 8 + kNonce;
constexpr std::string_view kAad = "tameflare-vault-v1:";

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

CipherCtx new_context() {
    CipherCtx context(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    if (!context) throw std::bad_alloc();
    return context;
}

// The associated data: a domain prefix and the credential's name.
std::string associated_data(std::string_view name) {
    std::string aad(kAad);
    aad += name;
    return aad;
}

// 32 raw bytes, or 64 hex digits with an optional final newline.
std::optional<std::array<std::uint8_t, VaultKey::kSize>> decode_key(std::string& text) {
    std::array<std::uint8_t, VaultKey::kSize> bytes{};
    if (text.size() == VaultKey::kSize) {
        std::memcpy(bytes.data(), text.data(), bytes.size());
        return bytes;
    }
    if (!text.empty() && text.back() == '\n') text.pop_back();
    if (text.size() != 2 * VaultKey::kSize) return std::nullopt;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        const int high = hex_value(text[2 * i]);
        const int low = hex_value(text[2 * i + 1]);
        if (high < 0 || low < 0) return std::nullopt;
        bytes[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    return bytes;
}

std::string read_key_file(const fs::path& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) {
        throw VaultError("cannot read the vault key " + path.string() + ": " + std::strerror(errno));
    }
    if ((info.st_mode & 077) != 0) {
        throw VaultError("the vault key " + path.string() + " is readable by group or others; run chmod 600 " +
                         path.string());
    }
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    if (!in.good() && !in.eof()) throw VaultError("cannot read the vault key " + path.string());
    return text;
}

}  // namespace

VaultKey::VaultKey(const std::array<std::uint8_t, kSize>& bytes) : bytes_(bytes) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(bytes_.data(), bytes_.size(), digest, &length, EVP_sha256(), nullptr);
    std::memcpy(id_.data(), digest, id_.size());
}

VaultKey::~VaultKey() {
    OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

VaultKey VaultKey::generate() {
    std::array<std::uint8_t, kSize> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        throw VaultError("the system random generator failed; cannot create a vault key");
    }
    VaultKey key(bytes);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return key;
}

void VaultKey::write(const fs::path& path) const {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw VaultError("cannot create the vault key " + path.string() + ": " + std::strerror(errno));
    const bool written = ::write(fd.get(), bytes_.data(), bytes_.size()) == static_cast<ssize_t>(bytes_.size());
    const bool synced = ::fsync(fd.get()) == 0;
    fd.reset();
    if (!written || !synced) {
        fs::remove(path);
        throw VaultError("cannot write the vault key " + path.string() + ": " + std::strerror(errno));
    }
}

VaultKey VaultKey::load(const fs::path& key_file) {
    std::string text = read_key_file(key_file);
    auto bytes = decode_key(text);
    OPENSSL_cleanse(text.data(), text.size());
    if (!bytes) {
        throw VaultError("the key " + key_file.string() + " is not 32 bytes or 64 hex digits");
    }
    VaultKey key(*bytes);
    OPENSSL_cleanse(bytes->data(), bytes->size());
    return key;
}

VaultKey VaultKey::load_or_create(const fs::path& key_file, const char* credentials_directory,
                                  std::string_view credential_name) {
    fs::path path = key_file;
    bool from_systemd = false;
    if (credentials_directory != nullptr && *credentials_directory != '\0') {
        const fs::path credential = fs::path(credentials_directory) / credential_name;
        std::error_code ec;
        if (fs::exists(credential, ec)) {
            path = credential;
            from_systemd = true;
        }
    }
    std::error_code ec;
    if (!from_systemd && !fs::exists(path, ec)) {
        fs::create_directories(path.parent_path(), ec);
        auto key = generate();
        key.write(path);
        return key;
    }
    // systemd makes credentials 0400 for the service; a file of our own must be 0600 or stricter.
    std::string text = from_systemd ? [&] {
        std::ifstream in(path, std::ios::binary);
        return std::string((std::istreambuf_iterator<char>(in)), {});
    }()
                                    : read_key_file(path);
    auto bytes = decode_key(text);
    OPENSSL_cleanse(text.data(), text.size());
    if (!bytes) {
        throw VaultError("the vault key " + path.string() +
                         " is not 32 bytes or 64 hex digits; restore it from backup (values sealed with another key "
                         "cannot be opened)");
    }
    VaultKey key(*bytes);
    OPENSSL_cleanse(bytes->data(), bytes->size());
    return key;
}

Sealed seal(const VaultKey& key, std::string_view name, std::string_view secret) {
    Sealed out(kHeader + secret.size() + kTag);
    std::memcpy(out.data(), kMagic.data(), kMagic.size());
    std::memcpy(out.data() + 4, key.id().data(), key.id().size());
    std::uint8_t* nonce = out.data() + 12;
    if (RAND_bytes(nonce, kNonce) != 1) throw VaultError("the system random generator failed");
    const std::string aad = associated_data(name);
    auto context = new_context();
    int length = 0;
    bool ok = EVP_EncryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
              EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) == 1 &&
              EVP_EncryptInit_ex(context.get(), nullptr, nullptr, key.data(), nonce) == 1 &&
              EVP_EncryptUpdate(context.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(aad.data()),
                                static_cast<int>(aad.size())) == 1 &&
              EVP_EncryptUpdate(context.get(), out.data() + kHeader, &length,
                                reinterpret_cast<const unsigned char*>(secret.data()),
                                static_cast<int>(secret.size())) == 1 &&
              EVP_EncryptFinal_ex(context.get(), out.data() + kHeader + length, &length) == 1 &&
              EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, kTag, out.data() + kHeader + secret.size()) == 1;
    if (!ok) throw VaultError("AES-256-GCM encryption failed");
    return out;
}

std::optional<VaultKey::Id> key_id(std::span<const std::uint8_t> sealed) {
    if (sealed.size() < kHeader + kTag || std::memcmp(sealed.data(), kMagic.data(), kMagic.size()) != 0) {
        return std::nullopt;
    }
    VaultKey::Id id{};
    std::memcpy(id.data(), sealed.data() + 4, id.size());
    return id;
}

std::optional<std::string> open(const VaultKey& key, std::string_view name, std::span<const std::uint8_t> sealed) {
    const auto id = key_id(sealed);
    if (!id || *id != key.id()) return std::nullopt;
    const std::size_t size = sealed.size() - kHeader - kTag;
    std::string secret(size, '\0');
    std::array<std::uint8_t, kTag> tag{};
    std::memcpy(tag.data(), sealed.data() + kHeader + size, kTag);
    const std::string aad = associated_data(name);
    auto context = new_context();
    int length = 0;
    const bool ok =
        EVP_DecryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
        EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) == 1 &&
        EVP_DecryptInit_ex(context.get(), nullptr, nullptr, key.data(), sealed.data() + 12) == 1 &&
        EVP_DecryptUpdate(context.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(aad.data()),
                          static_cast<int>(aad.size())) == 1 &&
        EVP_DecryptUpdate(context.get(), reinterpret_cast<unsigned char*>(secret.data()), &length,
                          sealed.data() + kHeader, static_cast<int>(size)) == 1 &&
        EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data()) == 1 &&
        EVP_DecryptFinal_ex(context.get(), reinterpret_cast<unsigned char*>(secret.data()) + length, &length) == 1;
    if (!ok) {
        OPENSSL_cleanse(secret.data(), secret.size());
        return std::nullopt;
    }
    return secret;
}

std::string masked_hint(std::string_view secret) {
    if (secret.size() < 12) return "****";
    return std::string(secret.substr(0, 4)) + "****" + std::string(secret.substr(secret.size() - 2));
}

}  // namespace tameflare::vault
