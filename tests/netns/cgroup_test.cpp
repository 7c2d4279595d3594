// Cgroups on the real cgroup2 hierarchy: every test works below its own
// <mount>/tf-test-<pid>-<n>, removed at the end.
#include "netns/cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace tameflare::netns {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A /bin/sh script in a forked child whose stdout the test reads line by line; killed and reaped at the end.
class Shell {
public:
    explicit Shell(const std::string& script) {
        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        // Built before fork: the child only calls dup2 and execv.
        std::vector<std::string> argv{"sh", "-c", script};
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (auto& arg : argv) args.push_back(arg.data());
        args.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(out[1], STDOUT_FILENO);
            ::execv("/bin/sh", args.data());
            ::_exit(127);
        }
        ::close(out[1]);
        out_ = out[0];
    }
    Shell(const Shell&) = delete;
    Shell& operator=(const Shell&) = delete;
    ~Shell() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        ::close(out_);
    }
    [[nodiscard]] pid_t pid() const { return pid_; }

    // The next line of output (without '\n'), or "" after 10 s or at EOF.
    std::string line() {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            if (const auto end = buffer_.find('\n'); end != std::string::npos) {
                std::string out = buffer_.substr(0, end);
                buffer_.erase(0, end + 1);
                return out;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd ready{out_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&ready, 1, static_cast<int>(left.count())) != 1) return "";
            char chunk[256];
            const ssize_t n = ::read(out_, chunk, sizeof chunk);
            if (n <= 0) return "";
            buffer_.append(chunk, static_cast<std::size_t>(n));
        }
    }

private:
    pid_t pid_ = -1;
    int out_ = -1;
    std::string buffer_;
};

// Dead: no /proc entry, or a zombie nobody reaped yet.
bool gone(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!std::getline(in, text)) return true;
    const auto paren = text.rfind(')');
    return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

bool contains(const std::vector<pid_t>& pids, pid_t pid) {
    return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

class CgroupTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root: creates cgroups and moves processes into them";
        }
        try {
            mount_ = cgroup2_mount();
        } catch (const std::exception& e) {
            GTEST_SKIP() << e.what();
        }
        static int counter = 0;
        root_.emplace(
            Cgroup::create(mount_, "tf-test-" + std::to_string(::getpid()) + "-cg" + std::to_string(counter++)));
    }
    void TearDown() override {
        if (root_) {
            EXPECT_TRUE(root_->remove(10s)) << "could not remove " << root_->path();
        }
    }

    fs::path mount_;
    std::optional<Cgroup> root_;
};

TEST_F(CgroupTest, MountIsTheCgroup2LineOfMountinfo) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    std::vector<fs::path> cgroup2_mounts;
    while (std::getline(in, line)) {
        if (line.find(" - cgroup2 ") == std::string::npos) continue;
        std::istringstream fields(line);
        std::string skip;
        std::string mount_point;
        fields >> skip >> skip >> skip >> skip >> mount_point;
        cgroup2_mounts.emplace_back(mount_point);
    }
    ASSERT_FALSE(cgroup2_mounts.empty());
    EXPECT_NE(std::find(cgroup2_mounts.begin(), cgroup2_mounts.end(), mount_), cgroup2_mounts.end()) << mount_;
    struct statfs info {};
    ASSERT_EQ(::statfs(mount_.c_str(), &info), 0);
    EXPECT_EQ(info.f_type, static_cast<decltype(info.f_type)>(CGROUP2_SUPER_MAGIC));

    // own_cgroup() is where the kernel lists this process.
    const fs::path own = own_cgroup();
    std::ifstream procs(own / "cgroup.procs");
    std::vector<pid_t> pids;
    for (pid_t pid = 0; procs >> pid;) pids.push_back(pid);
    EXPECT_TRUE(contains(pids, ::getpid())) << own;
}

TEST_F(CgroupTest, CreateOpenAndIdIsTheInode) {
    auto agent = Cgroup::create(root_->path(), "agent-1.x_y");
    EXPECT_EQ(agent.path(), root_->path() / "agent-1.x_y");
    EXPECT_GE(agent.fd(), 0);
    struct stat info {};
    ASSERT_EQ(::stat(agent.path().c_str(), &info), 0);
    EXPECT_EQ(agent.id(), info.st_ino);
    EXPECT_EQ(cgroup_id(agent.path()), info.st_ino);
    EXPECT_NE(agent.id(), root_->id());

    const auto reopened = Cgroup::open(agent.path());
    EXPECT_EQ(reopened.id(), agent.id());
    EXPECT_FALSE(reopened.populated());
    EXPECT_TRUE(reopened.processes().empty());

    // ensure_cgroup is mkdir -p: new levels made, existing ones fine.
    ensure_cgroup(root_->path() / "gw" / "a" / "b");
    ensure_cgroup(root_->path() / "gw" / "a" / "b");
    EXPECT_TRUE(fs::exists(root_->path() / "gw" / "a" / "b" / "cgroup.procs"));
}

TEST_F(CgroupTest, CreateRefusesBadNamesAndExistingCgroups) {
    for (const std::string& bad :
         std::vector<std::string>{"", ".", "..", "a/b", "has space", "tab\there", std::string(65, 'a'), "\xc3\xa9"}) {
        try {
            (void)Cgroup::create(root_->path(), bad);
            ADD_FAILURE() << "accepted \"" << bad << "\"";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("invalid cgroup name"), std::string::npos) << e.what();
        }
    }
    EXPECT_NO_THROW((void)Cgroup::create(root_->path(), std::string(64, 'a')));

    (void)Cgroup::create(root_->path(), "taken");
    try {
        (void)Cgroup::create(root_->path(), "taken");
        ADD_FAILURE() << "created an existing cgroup";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EEXIST);
        const std::string message = e.what();
        EXPECT_NE(message.find((root_->path() / "taken").string()), std::string::npos) << message;
        EXPECT_NE(message.find("File exists"), std::string::npos) << message;
        EXPECT_NE(message.find("already there"), std::string::npos) << message;
    }

    // A directory that is not a cgroup is refused, naming the cgroup2 mount.
    testing::TempDir plain;
    try {
        (void)Cgroup::open(plain.path());
        ADD_FAILURE() << "opened a plain directory as a cgroup";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("not a cgroup2 directory"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(mount_.string()), std::string::npos) << e.what();
    }
}

TEST_F(CgroupTest, ProcessesIncludeAGrandchildInASubCgroup) {
    auto agent = Cgroup::create(root_->path(), "agent");
    auto sub = Cgroup::create(agent.path(), "sub");
    const std::string script = "echo $$ > " + agent.path().string() + "/cgroup.procs || exit 1\n" +
                               "sh -c 'echo $$ > " + sub.path().string() +
                               "/cgroup.procs && echo $$; exec sleep 1000' &\n"
                               "wait\n";
    Shell shell(script);
    const std::string grandchild_text = shell.line();
    ASSERT_FALSE(grandchild_text.empty());
    const pid_t grandchild = std::stoi(grandchild_text);

    const auto all = agent.processes();
    EXPECT_TRUE(contains(all, shell.pid()));
    EXPECT_TRUE(contains(all, grandchild));
    EXPECT_EQ(sub.processes(), std::vector<pid_t>{grandchild});
    EXPECT_TRUE(agent.populated());
    EXPECT_TRUE(sub.populated());
}

TEST_F(CgroupTest, KillAndRemoveEndATermIgnoringProcessAndASetsidDaemon) {
    auto agent = Cgroup::create(root_->path(), "agent");
    ensure_cgroup(agent.path() / "deeper");
    // The shell ignores SIGTERM; its grandchild left it (double fork, setsid) and ignores SIGTERM too.
    const std::string script =
        "trap '' TERM\n"
        "echo $$ > " +
        agent.path().string() +
        "/cgroup.procs || exit 1\n"
        "( (setsid sh -c 'echo $$; exec sleep 1000 >/dev/null' </dev/null &) | head -n1 )\n"
        "echo ready\n"
        "while :; do sleep 1; done\n";
    Shell shell(script);
    const pid_t daemon = std::stoi(shell.line());
    ASSERT_EQ(shell.line(), "ready");
    EXPECT_NE(::getsid(daemon), ::getsid(shell.pid()));

    ::kill(shell.pid(), SIGTERM);
    ::kill(daemon, SIGTERM);
    std::this_thread::sleep_for(100ms);
    const auto before = agent.processes();
    ASSERT_TRUE(contains(before, shell.pid()));
    ASSERT_TRUE(contains(before, daemon));

    const auto started = std::chrono::steady_clock::now();
    EXPECT_TRUE(agent.remove(5s));
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    EXPECT_FALSE(fs::exists(agent.path()));
    EXPECT_TRUE(gone(shell.pid()));
    EXPECT_TRUE(gone(daemon));
}

TEST_F(CgroupTest, KillEachProcessEmptiesACgroupWithoutCgroupKill) {
    auto agent = Cgroup::create(root_->path(), "agent");
    const std::string script =
        "trap '' TERM\n"
        "echo $$ > " +
        agent.path().string() +
        "/cgroup.procs || exit 1\n"
        "for i in 1 2 3; do sleep 1000 & done\n"
        "echo ready\n"
        "wait\n";
    Shell shell(script);
    ASSERT_EQ(shell.line(), "ready");
    EXPECT_EQ(agent.processes().size(), 4U);

    EXPECT_TRUE(agent.kill_each_process(5s));
    EXPECT_TRUE(agent.processes().empty());
    EXPECT_TRUE(agent.remove(5s));
}

TEST_F(CgroupTest, RemoveAnEmptyTreeDeepestFirst) {
    ensure_cgroup(root_->path() / "gw" / "agent" / "inner");
    auto gateway = Cgroup::open(root_->path() / "gw");
    EXPECT_FALSE(gateway.populated());
    EXPECT_TRUE(gateway.remove(1s));
    EXPECT_FALSE(fs::exists(root_->path() / "gw"));
    // Removing what is already gone is fine.
    EXPECT_TRUE(gateway.remove(1s));
}

}  // namespace
}  // namespace tameflare::netns
