// A gateway's filesystem rules made concrete for one launch: on real
// directories, with globs expanded by listing them.
#include "netns/filesystem.h"

#include <poll.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace tameflare::netns {
namespace {

namespace fs = std::filesystem;

bool has(const std::vector<std::string>& list, const std::string& entry) {
    return std::find(list.begin(), list.end(), entry) != list.end();
}

TEST(FilesystemView, TheDefaultsForAProjectUnderTheHome) {
    const FilesystemInputs inputs{{"/home/ann", "/home/ann/src/app"}, {"/home/ann-db"}, ""};
    const FilesystemView view = resolve_filesystem(policy::default_filesystem(), inputs);
    EXPECT_TRUE(has(view.write, "/home/ann/src/app"));
    EXPECT_TRUE(has(view.write, "/home/ann/.cache"));
    EXPECT_EQ(view.private_tmp, (std::vector<std::string>{"/tmp", "/var/tmp"}));
    // Only what lies in a write root is protected; the directories leading there are pinned.
    EXPECT_TRUE(has(view.protect, "/home/ann/src/app/.git/hooks"));
    EXPECT_TRUE(has(view.protect, "/home/ann/src/app/.envrc"));
    EXPECT_FALSE(has(view.protect, "/home/ann/.bashrc")) << "the home is read-only already";
    EXPECT_EQ(view.pins, std::vector<std::string>{"/home/ann/src/app/.git"});
    // Keys are hidden under every home in play.
    EXPECT_TRUE(has(view.hide, "/home/ann/.ssh"));
    EXPECT_TRUE(has(view.hide, "/home/ann-db/.ssh"));
    EXPECT_TRUE(view.notes.empty());
}

TEST(FilesystemView, AWorkingDirectoryThatHoldsTheHomeOrIsASystemDirectoryStaysReadOnly) {
    for (const char* workdir : {"/home/ann", "/home", "/", "/etc", "/usr/local/bin", "/var/spool/cron"}) {
        const FilesystemView view =
            resolve_filesystem(policy::default_filesystem(), FilesystemInputs{{"/home/ann", workdir}, {}, ""});
        EXPECT_FALSE(has(view.write, workdir)) << workdir;
        ASSERT_EQ(view.notes.size(), 1u) << workdir;
        EXPECT_NE(view.notes[0].find("stays read-only"), std::string::npos) << view.notes[0];
        EXPECT_FALSE(has(view.protect, "/home/ann/.bashrc"));
    }
    // Given the home explicitly, its start-up files are protected.
    policy::FilesystemRules rules = policy::default_filesystem();
    rules.write.push_back("~");
    rules.write.erase(rules.write.begin());  // "."
    const FilesystemView view = resolve_filesystem(rules, FilesystemInputs{{"/home/ann", "/home/ann"}, {}, ""});
    EXPECT_TRUE(has(view.write, "/home/ann"));
    EXPECT_TRUE(has(view.protect, "/home/ann/.bashrc"));
    EXPECT_TRUE(has(view.protect, "/home/ann/.config/systemd"));
    EXPECT_TRUE(has(view.pins, "/home/ann/.config"));
}

TEST(FilesystemView, GlobsAreExpandedInTheGivenRootAndCapped) {
    testing::TempDir root;
    const fs::path home = root.path() / "home" / "ann";
    fs::create_directories(home / ".config" / "acme-token");
    fs::create_directories(home / ".config" / "other");
    std::ofstream(home / ".config" / "zeta-token");
    for (int i = 0; i < 300; ++i) std::ofstream(home / ("f" + std::to_string(i)));
    policy::FilesystemRules rules;
    rules.private_tmp = false;
    rules.hide = {"~/.config/*-token", "~/.none/*"};
    const FilesystemInputs inputs{{"/home/ann", "/home/ann"}, {}, root.path().string()};
    FilesystemView view = resolve_filesystem(rules, inputs);
    EXPECT_EQ(view.hide, (std::vector<std::string>{"/home/ann/.config/acme-token", "/home/ann/.config/zeta-token"}));

    rules.hide = {"~/f*"};
    view = resolve_filesystem(rules, inputs);
    EXPECT_EQ(view.hide.size(), kMaxGlobMatches);
    ASSERT_EQ(view.notes.size(), 1u);
    EXPECT_NE(view.notes[0].find("matched more than"), std::string::npos);
}

TEST(FilesystemView, AProtectedPathThatDoesNotExistInAnExistingDirectoryIsWatched) {
    testing::TempDir root;
    const fs::path project = root.path() / "app";
    fs::create_directories(project / ".git" / "hooks");
    policy::FilesystemRules rules;
    rules.private_tmp = false;
    rules.write = {"."};
    rules.protect = {".git/hooks", ".git/commondir", ".envrc", ".vscode/tasks.json"};
    const FilesystemView view = resolve_filesystem(rules, FilesystemInputs{{"/home/ann", project.string()}, {}, ""});
    std::vector<std::string> absent;
    for (const auto& entry : view.absent) absent.push_back(entry.directory + " " + entry.name);
    EXPECT_EQ(absent,
              (std::vector<std::string>{(project / ".git").string() + " commondir", project.string() + " .envrc"}))
        << "hooks exists (a mount holds it); .vscode does not, so nothing inside it can be watched";
}

// What appears under a watched name is moved aside in its directory, never over anything, and never followed.
TEST(ProtectedNameGuard, MovesAsideWhatAppearsUnderAProtectedName) {
    testing::TempDir dir;
    fs::create_directories(dir.path() / ".git");
    ProtectedNameGuard guard({{(dir.path() / ".git").string(), "commondir"}, {"/no/such/dir", ".envrc"}}, "", "a1");
    ASSERT_GE(guard.fd(), 0);
    EXPECT_TRUE(guard.sweep().empty());
    std::ofstream(dir.path() / ".git" / "commondir") << "/elsewhere\n";
    pollfd ready{guard.fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&ready, 1, 5000), 1) << "inotify says something was made";
    auto moved = guard.sweep();
    ASSERT_EQ(moved.size(), 1u);
    const std::string prefix = (dir.path() / ".git").string() + "/commondir -> commondir.tameflare-a1-";
    ASSERT_EQ(moved[0].rfind(prefix, 0), 0u) << moved[0];
    const std::string first = moved[0].substr(moved[0].find("-> ") + 3);
    EXPECT_EQ(first.size(), std::string("commondir.tameflare-a1-").size() + 16) << "16 random hex digits";
    EXPECT_FALSE(fs::exists(dir.path() / ".git" / "commondir"));
    // Again, as a symbolic link: the link itself is moved, next to the first.
    fs::create_symlink("/etc/passwd", dir.path() / ".git" / "commondir");
    moved = guard.sweep();
    ASSERT_EQ(moved.size(), 1u);
    const std::string second = moved[0].substr(moved[0].find("-> ") + 3);
    EXPECT_NE(second, first);
    EXPECT_TRUE(fs::is_symlink(dir.path() / ".git" / second));
    EXPECT_TRUE(fs::exists("/etc/passwd"));
    EXPECT_TRUE(fs::is_regular_file(dir.path() / ".git" / first)) << "the first stays as it was";
    // Names the agent made in advance, for every predictable candidate, do not keep its file in place.
    for (int i = 1; i <= 100; ++i) {
        std::ofstream(dir.path() / ".git" / ("commondir.tameflare-a1" + (i > 1 ? "-" + std::to_string(i) : "")));
    }
    std::ofstream(dir.path() / ".git" / "commondir") << "/elsewhere\n";
    EXPECT_EQ(guard.sweep().size(), 1u);
    EXPECT_FALSE(fs::exists(dir.path() / ".git" / "commondir"));

    // Nothing to watch: no descriptor.
    ProtectedNameGuard idle({}, "", "a2");
    EXPECT_EQ(idle.fd(), -1);
    EXPECT_TRUE(idle.sweep().empty());
}

TEST(FilesystemView, TheWriteRulesetGovernsEveryWriteRightAndGrantsTheRoots) {
    FilesystemView view;
    view.write = {"/home/ann/src/app"};
    view.private_tmp = {"/tmp"};
    const LandlockPolicy policy = write_ruleset(view);
    EXPECT_EQ(policy.handled_fs, kFsWriteRights);
    EXPECT_EQ(policy.handled_fs & (1ULL << 2), 0u) << "reading is not governed";
    const auto granted = [&](const std::string& path) {
        for (const auto& rule : policy.paths) {
            if (rule.path == path) return rule.access;
        }
        return std::uint64_t{0};
    };
    EXPECT_EQ(granted("/home/ann/src/app"), kFsWriteRights);
    EXPECT_EQ(granted("/tmp"), kFsWriteRights);
    EXPECT_EQ(granted("/dev"), kFsWriteFile | kFsTruncate | kFsIoctlDev);
    const LandlockPlan abi1 = plan_landlock(policy, 1);
    EXPECT_EQ(abi1.handled_fs & ~((1ULL << 13) - 1), 0u) << "ABI 1 knows no REFER, TRUNCATE or IOCTL_DEV";
}

}  // namespace
}  // namespace tameflare::netns
