// tf vault as a user runs it: values go in on standard input only and never
// come out; rotation refuses while the daemon (the state lock's holder) runs.
#include "daemon/store/state_lock.h"
#include "daemon/store/vault_store.h"

#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace tameflare::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kToken = "ghp_0123456789abcdefghijXY";

class VaultCli : public ::testing::Test {
protected:
    TempDir dir_{"tf-vault-cli"};
    fs::path state_ = dir_.path() / "state";

    void SetUp() override { fs::create_directory(state_); }

    // tf vault ARGS... --state-dir <state_>, with `input` on standard input.
    Result vault(std::vector<std::string> args, const std::optional<std::string>& input = std::nullopt) {
        std::vector<std::string> argv = {TF_BINARY, "vault"};
        argv.insert(argv.end(), args.begin(), args.end());
        argv.emplace_back("--state-dir");
        argv.push_back(state_.string());
        const fs::path stdin_file = dir_.path() / "stdin";
        if (input) {
            std::ofstream(stdin_file, std::ios::binary) << *input;
        } else {
            std::ofstream(stdin_file, std::ios::binary).flush();
        }
        // The shell only redirects standard input; "$@" is tf and its arguments.
        std::vector<std::string> shell = {"/bin/sh", "-c", "exec \"$@\" < \"$0\"", stdin_file.string()};
        shell.insert(shell.end(), argv.begin(), argv.end());
        return run(shell);
    }

    std::string key_bytes() {
        std::ifstream in(state_ / "vault.key", std::ios::binary);
        return {std::istreambuf_iterator<char>(in), {}};
    }

    // The value as the daemon would read it.
    std::optional<std::string> value_of(const std::string& name) {
        auto store = store::Store::open(store::StoreOptions{.database = state_ / "tameflared.db"});
        store::Vault vault(*store, store::Vault::load_key(state_ / "vault.key", *store));
        return vault.get(name);
    }
};

TEST_F(VaultCli, SetReadsStandardInputAndListShowsOnlyTheHint) {
    const auto set = vault({"set", "github_token", "--connector", "github"}, std::string(kToken) + "\n");
    ASSERT_EQ(set.status, 0) << set.err;
    EXPECT_EQ(set.out.find(kToken), std::string::npos) << set.out;

    const auto list = vault({"list"});
    ASSERT_EQ(list.status, 0) << list.err;
    EXPECT_NE(list.out.find("NAME"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("LAST_USED"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("github_token"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("github "), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("ghp_****XY"), std::string::npos) << list.out;
    EXPECT_EQ(list.out.find(kToken), std::string::npos) << list.out;
    EXPECT_EQ(list.out.find("0123456789"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("Z  -\n"), std::string::npos) << list.out;  // not used yet

    const auto unused = nlohmann::json::parse(vault({"list", "--json"}).out);
    ASSERT_EQ(unused.size(), 1u);
    EXPECT_TRUE(unused[0]["last_used"].is_null());
    EXPECT_EQ(value_of("github_token"), kToken);  // the newline is not part of it

    const auto json = vault({"list", "--json"});
    ASSERT_EQ(json.status, 0) << json.err;
    const auto entries = nlohmann::json::parse(json.out);
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0]["name"], "github_token");
    EXPECT_EQ(entries[0]["connector"], "github");
    EXPECT_EQ(entries[0]["hint"], "ghp_****XY");
    EXPECT_EQ(entries[0]["updated"].get<std::string>().back(), 'Z');  // RFC 3339, UTC
    ASSERT_TRUE(entries[0]["last_used"].is_string()) << json.out;     // value_of() used it
    EXPECT_EQ(entries[0]["last_used"].get<std::string>().size(), std::string("2024-01-01T00:00:00Z").size());
    EXPECT_EQ(json.out.find("0123456789"), std::string::npos) << json.out;
}

TEST_F(VaultCli, ACarriageReturnLineEndIsDroppedButInnerNewlinesStay) {
    ASSERT_EQ(vault({"set", "crlf"}, "token-with-crlf-ending\r\n").status, 0);
    EXPECT_EQ(value_of("crlf"), "token-with-crlf-ending");
    ASSERT_EQ(vault({"set", "pem"}, "line one\nline two\n").status, 0);
    EXPECT_EQ(value_of("pem"), "line one\nline two");
}

TEST_F(VaultCli, AValueOnTheCommandLineIsRefused) {
    const auto positional = vault({"set", "github_token", "hunter2-secret-value"}, kToken);
    EXPECT_EQ(positional.status, 2);
    EXPECT_NE(positional.err.find("/proc"), std::string::npos) << positional.err;
    EXPECT_NE(positional.err.find("standard input"), std::string::npos) << positional.err;
    EXPECT_EQ(positional.err.find("hunter2"), std::string::npos) << positional.err;

    for (const char* option : {"--value=hunter2-secret-value", "--value"}) {
        const auto flag = vault({"set", "github_token", option}, kToken);
        EXPECT_EQ(flag.status, 2) << option;
        EXPECT_NE(flag.err.find("/proc"), std::string::npos) << flag.err;
        EXPECT_EQ(flag.err.find("hunter2"), std::string::npos) << flag.err;
    }
    EXPECT_FALSE(fs::exists(state_ / "tameflared.db"));
}

TEST_F(VaultCli, AnEmptyValueIsRefused) {
    for (const char* input : {"", "\n", "\r\n"}) {
        const auto result = vault({"set", "github_token"}, std::string(input));
        EXPECT_EQ(result.status, 2) << "input of " << std::string(input).size() << " bytes";
        EXPECT_NE(result.err.find("empty"), std::string::npos) << result.err;
    }
    EXPECT_FALSE(fs::exists(state_ / "tameflared.db"));
}

TEST_F(VaultCli, AnInvalidNameIsRefusedWithTheRule) {
    const auto result = vault({"set", "bad/name"}, kToken);
    EXPECT_EQ(result.status, 2);
    EXPECT_NE(result.err.find("'/'"), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("letters, digits"), std::string::npos) << result.err;
    EXPECT_EQ(vault({"set", std::string(129, 'a')}, kToken).status, 2);
    EXPECT_EQ(vault({"remove", "bad name"}).status, 2);
}

TEST_F(VaultCli, RemoveDeletesTheCredential) {
    ASSERT_EQ(vault({"set", "doomed"}, kToken).status, 0);
    ASSERT_EQ(vault({"set", "kept"}, kToken).status, 0);
    const auto removed = vault({"remove", "doomed"});
    EXPECT_EQ(removed.status, 0) << removed.err;
    const auto list = vault({"list"});
    EXPECT_EQ(list.out.find("doomed"), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("kept"), std::string::npos) << list.out;

    const auto again = vault({"remove", "doomed"});
    EXPECT_EQ(again.status, 1);
    EXPECT_NE(again.err.find("no credential named doomed"), std::string::npos) << again.err;
}

TEST_F(VaultCli, RotateReencryptsWhenNoDaemonRuns) {
    ASSERT_EQ(vault({"set", "one"}, "first-value-0123456789").status, 0);
    ASSERT_EQ(vault({"set", "two"}, "second-value-0123456789").status, 0);
    const std::string before = key_bytes();

    const auto rotated = vault({"rotate"});
    ASSERT_EQ(rotated.status, 0) << rotated.err;
    EXPECT_NE(rotated.out.find("re-encrypted 2 values"), std::string::npos) << rotated.out;
    EXPECT_NE(key_bytes(), before);
    EXPECT_FALSE(fs::exists(state_ / "vault.key.new"));
    EXPECT_EQ(value_of("one"), "first-value-0123456789");
    EXPECT_EQ(value_of("two"), "second-value-0123456789");
}

TEST_F(VaultCli, RotateRefusesWhileTheDaemonHoldsTheLock) {
    ASSERT_EQ(vault({"set", "one"}, "first-value-0123456789").status, 0);
    const std::string before = key_bytes();
    const auto lock = store::StateLock::try_acquire(state_);
    ASSERT_TRUE(lock.has_value());

    const auto refused = vault({"rotate"});
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(refused.err.find("tameflared is running"), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find((state_ / "tameflared.lock").string()), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find("stop it first"), std::string::npos) << refused.err;
    EXPECT_EQ(key_bytes(), before);

    // Storing a value still works while the daemon runs.
    const auto set = vault({"set", "two"}, "second-value-0123456789");
    EXPECT_EQ(set.status, 0) << set.err;
}

TEST_F(VaultCli, ListSaysWhenThereIsNoDatabase) {
    const auto list = vault({"list"});
    EXPECT_NE(list.status, 0);
    EXPECT_NE(list.err.find("--state-dir"), std::string::npos) << list.err;
    EXPECT_FALSE(fs::exists(state_ / "tameflared.db"));
    EXPECT_FALSE(fs::exists(state_ / "vault.key"));
}

TEST_F(VaultCli, HelpAndUsageErrors) {
    const auto help = run({TF_BINARY, "vault", "--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_NE(help.out.find("tf vault set NAME"), std::string::npos) << help.out;
    EXPECT_EQ(run({TF_BINARY, "vault", "set", "--help"}).status, 0);
    EXPECT_EQ(run({TF_BINARY, "vault"}).status, 2);
    EXPECT_EQ(run({TF_BINARY, "vault", "frobnicate"}).status, 2);
    EXPECT_EQ(vault({"list", "--connector", "github"}).status, 2);
    EXPECT_EQ(vault({"set"}, kToken).status, 2);
}

}  // namespace
}  // namespace tameflare::testing
