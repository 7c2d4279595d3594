// The vault's sealing and its key: values open only with the key and the
// name they were sealed for, and any changed byte is detected.
#include "daemon/vault/vault_crypto.h"
#include "support/temp_dir.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <set>

namespace tameflare::vault {
namespace {

namespace fs = std::filesystem;

TEST(VaultCrypto, SealedValuesOpenWithTheirKeyAndName) {
    const auto key = VaultKey::generate();
    const auto sealed = seal(key, "github-pat", "ghp_secret_value_123");
    EXPECT_EQ(open(key, "github-pat", sealed), "ghp_secret_value_123");
    EXPECT_EQ(sealed.size(), 4 + 8 + 12 + 20 + 16u);
    EXPECT_EQ(std::string(sealed.begin() + 24, sealed.begin() + 44).find("ghp_"), std::string::npos);
    EXPECT_EQ(open(key, "", seal(key, "", "")), "");
}

TEST(VaultCrypto, EverySealUsesAFreshNonce) {
    const auto key = VaultKey::generate();
    std::set<Sealed> seen;
    for (int i = 0; i < 100; ++i) seen.insert(seal(key, "name", "same value"));
    EXPECT_EQ(seen.size(), 100u);
}

TEST(VaultCrypto, AValueMovedToAnotherNameDoesNotOpen) {
    const auto key = VaultKey::generate();
    const auto sealed = seal(key, "openai-key", "sk-live");
    EXPECT_FALSE(open(key, "anthropic-key", sealed));
    EXPECT_FALSE(open(key, "openai-key2", sealed));
}

TEST(VaultCrypto, AnyChangedByteOrTheWrongKeyIsDetected) {
    const auto key = VaultKey::generate();
    const auto sealed = seal(key, "stripe-key", "rk_live_abcdef");
    for (std::size_t i = 0; i < sealed.size(); ++i) {
        auto changed = sealed;
        changed[i] ^= 0x01;
        EXPECT_FALSE(open(key, "stripe-key", changed)) << "byte " << i;
    }
    for (std::size_t length = 0; length < sealed.size(); ++length) {
        EXPECT_FALSE(open(key, "stripe-key", std::span(sealed.data(), length))) << "cut at " << length;
    }
    const auto other = VaultKey::generate();
    EXPECT_NE(other.id(), key.id());
    EXPECT_FALSE(open(other, "stripe-key", sealed));
    EXPECT_EQ(key_id(sealed), key.id());
    EXPECT_FALSE(key_id(Sealed{1, 2, 3}));
}

TEST(VaultKeyFile, IsCreated0600OnFirstStartAndReadBackTheSame) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "state/vault.key";
    const auto created = VaultKey::load_or_create(file, nullptr);
    struct stat info {};
    ASSERT_EQ(::stat(file.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
    EXPECT_EQ(fs::file_size(file), VaultKey::kSize);
    const auto loaded = VaultKey::load_or_create(file, nullptr);
    EXPECT_EQ(loaded.id(), created.id());
    EXPECT_EQ(open(loaded, "n", seal(created, "n", "v")), "v");
}

TEST(VaultKeyFile, ARefusedKeyFileSaysWhyAndIsNeverReplaced) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "vault.key";
    std::ofstream(file) << "too short";
    fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
    try {
        (void)VaultKey::load_or_create(file, nullptr);
        FAIL() << "a corrupt key was accepted";
    } catch (const VaultError& error) {
        EXPECT_NE(std::string(error.what()).find("not 32 bytes or 64 hex digits"), std::string::npos);
    }
    EXPECT_EQ(fs::file_size(file), 9u);  // left as it was

    fs::permissions(file, fs::perms::group_read, fs::perm_options::add);
    try {
        (void)VaultKey::load_or_create(file, nullptr);
        FAIL() << "a group-readable key was accepted";
    } catch (const VaultError& error) {
        EXPECT_NE(std::string(error.what()).find("chmod 600"), std::string::npos);
    }
}

TEST(VaultKeyFile, HexKeysAndSystemdCredentialsAreAccepted) {
    testing::TempDir dir;
    const std::string hex(64, 'a');
    const fs::path file = dir.path() / "vault.key";
    std::ofstream(file) << hex << "\n";
    fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    const auto from_file = VaultKey::load_or_create(file, nullptr);

    // $CREDENTIALS_DIRECTORY/vault.key wins over the key file.
    const fs::path credentials = dir.path() / "credentials";
    fs::create_directories(credentials);
    std::ofstream(credentials / "vault.key") << std::string(64, 'b');
    const auto from_systemd = VaultKey::load_or_create(file, credentials.c_str());
    EXPECT_NE(from_systemd.id(), from_file.id());
    // A credentials directory without vault.key falls back to the file.
    const fs::path empty = dir.path() / "empty";
    fs::create_directories(empty);
    EXPECT_EQ(VaultKey::load_or_create(file, empty.c_str()).id(), from_file.id());
}

TEST(VaultCrypto, HintsShowLittleOfTheValue) {
    EXPECT_EQ(masked_hint("ghp_1234567890Xy"), "ghp_****Xy");
    EXPECT_EQ(masked_hint("short"), "****");
}

}  // namespace
}  // namespace tameflare::vault
