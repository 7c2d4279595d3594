#include "policy/filesystem.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tameflare::policy {
namespace {

const PathContext kContext{"/home/ann", "/home/ann/src/app"};

TEST(Filesystem, EntriesBecomeAbsolutePatterns) {
    EXPECT_EQ(absolute_pattern(".", kContext), "/home/ann/src/app");
    EXPECT_EQ(absolute_pattern("./", kContext), "/home/ann/src/app");
    EXPECT_EQ(absolute_pattern(".git/hooks", kContext), "/home/ann/src/app/.git/hooks");
    EXPECT_EQ(absolute_pattern("~", kContext), "/home/ann");
    EXPECT_EQ(absolute_pattern("~/", kContext), "/home/ann");
    EXPECT_EQ(absolute_pattern("~/.cache/", kContext), "/home/ann/.cache");
    EXPECT_EQ(absolute_pattern("/srv/cache", kContext), "/srv/cache");
    std::size_t literal = 0;
    EXPECT_EQ(absolute_pattern("~/.config/*", PathContext{"/home/we*ird/", "/"}, &literal), "/home/we*ird/.config/*");
    EXPECT_EQ(literal, std::string("/home/we*ird").size()) << "the home's own '*' is literal";
    EXPECT_EQ(absolute_pattern(".envrc", PathContext{"/root", "/"}), "/.envrc");
}

TEST(Filesystem, WithinComparesWholeComponents) {
    EXPECT_TRUE(path_within("/a/b", "/a/b"));
    EXPECT_TRUE(path_within("/a/b/c", "/a/b"));
    EXPECT_FALSE(path_within("/a/bc", "/a/b"));
    EXPECT_FALSE(path_within("/a", "/a/b"));
    EXPECT_TRUE(path_within("/anything", "/"));
}

TEST(Filesystem, AnEntryThatCouldBeMisreadIsRefused) {
    EXPECT_EQ(filesystem_entry_error("."), "");
    EXPECT_EQ(filesystem_entry_error("~/.config/*-token"), "");
    EXPECT_EQ(filesystem_entry_error("build/out?"), "");
    EXPECT_NE(filesystem_entry_error(""), "");
    EXPECT_NE(filesystem_entry_error("/"), "");
    EXPECT_NE(filesystem_entry_error("~ann/.ssh").find("~user"), std::string::npos);
    EXPECT_NE(filesystem_entry_error("~/../other").find("'..'"), std::string::npos);
    EXPECT_NE(filesystem_entry_error("a/./b").find("'.'"), std::string::npos);
    EXPECT_NE(filesystem_entry_error("/srv//x").find("empty"), std::string::npos);
    EXPECT_NE(filesystem_entry_error("~/**/id_rsa").find("'**'"), std::string::npos);
    EXPECT_NE(filesystem_entry_error("~/.ssh/id_[rd]sa").find("'['"), std::string::npos);
    EXPECT_NE(filesystem_entry_error(std::string("/a\0b", 4)).find("NUL"), std::string::npos);
}

TEST(Filesystem, GivenEntriesAddToTheDefaultsAndBangTakesOneOut) {
    std::vector<std::string> out;
    std::size_t index = 0;
    EXPECT_EQ(merge_filesystem_list({"a", "b"}, {"c", "!a", "b"}, out, index), "");
    EXPECT_EQ(out, (std::vector<std::string>{"b", "c"}));
    EXPECT_NE(merge_filesystem_list({"a"}, {"x", "!z"}, out, index), "");
    EXPECT_EQ(index, 1u);
    EXPECT_NE(merge_filesystem_list({"a"}, {"x/../y"}, out, index), "");
    EXPECT_EQ(index, 0u);
}

TEST(Filesystem, TheDefaultsCoverWhatTheIssueNames) {
    const FilesystemRules& rules = default_filesystem();
    const auto has = [](const std::vector<std::string>& list, const char* entry) {
        return std::find(list.begin(), list.end(), entry) != list.end();
    };
    for (const char* entry : {".", "~/.cache", "~/.npm", "~/.cargo/registry", "~/.m2/repository", "~/go/pkg/mod"}) {
        EXPECT_TRUE(has(rules.write, entry)) << entry;
    }
    for (const char* entry : {".git/hooks", ".git/config", ".gitmodules", ".envrc", ".vscode", ".idea", "~/.bashrc",
                              "~/.profile", "~/.config/systemd", "~/.config/autostart"}) {
        EXPECT_TRUE(has(rules.protect, entry)) << entry;
    }
    for (const char* entry : {"~/.ssh", "~/.aws", "~/.config/gh", "~/.netrc", "~/.docker", "~/.kube", "~/.gnupg",
                              "~/.password-store", "~/.config/gcloud", "~/.azure", "~/.config/tameflare"}) {
        EXPECT_TRUE(has(rules.hide, entry)) << entry;
    }
    EXPECT_TRUE(rules.private_tmp);
    for (const auto* list : {&rules.write, &rules.protect, &rules.hide}) {
        for (const auto& entry : *list) EXPECT_EQ(filesystem_entry_error(entry), "") << entry;
    }
}

}  // namespace
}  // namespace tameflare::policy
