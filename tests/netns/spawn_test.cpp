// Spawning agents on the real kernel: real cgroups, namespaces, credentials
// and processes. Every test works below its own <mount>/tf-test-<pid>-<n>.
#include "netns/spawn.h"

#include "netns/cgroup.h"
#include "netns/namespaces.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/loopback.h"
#include "tests/support/temp_dir.h"

namespace tameflare::netns {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPath = "PATH=/usr/local/bin:/usr/bin:/bin";

struct Pipe {
    UniqueFd read;
    UniqueFd write;
    Pipe() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        read.reset(fds[0]);
        write.reset(fds[1]);
    }
};

// Reads `fd` until EOF or `timeout`.
std::string read_all(int fd, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string out;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd ready{fd, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&ready, 1, static_cast<int>(left.count())) != 1) return out;
        char chunk[4096];
        const ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n <= 0) return out;
        out.append(chunk, static_cast<std::size_t>(n));
    }
}

// Reads `fd` until `needle` has appeared.
bool read_until(int fd, const std::string& needle, std::string& out) {
    while (out.find(needle) == std::string::npos) {
        pollfd ready{fd, POLLIN, 0};
        if (::poll(&ready, 1, 10000) != 1) return false;
        char chunk[4096];
        const ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n <= 0) return false;
        out.append(chunk, static_cast<std::size_t>(n));
    }
    return true;
}

std::map<std::string, std::string> status_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::map<std::string, std::string> fields;
    std::string line;
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        auto value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        fields[line.substr(0, colon)] = value;
    }
    return fields;
}

std::string slurp_file(const fs::path& file) {
    std::ifstream in(file);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::vector<pid_t>& pids, pid_t pid) {
    return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

struct Ran {
    int status;
    std::string out;
};

class SpawnTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root: spawns into cgroups and namespaces as other users";
        }
        try {
            mount_ = cgroup2_mount();
        } catch (const std::exception& e) {
            GTEST_SKIP() << e.what();
        }
        static int counter = 0;
        root_.emplace(
            Cgroup::create(mount_, "tf-test-" + std::to_string(::getpid()) + "-sp" + std::to_string(counter++)));
        agent_.emplace(Cgroup::create(root_->path(), "agent"));
    }
    void TearDown() override {
        if (root_) {
            EXPECT_TRUE(root_->remove(10s)) << "could not remove " << root_->path();
        }
    }

    SpawnOptions options(std::vector<std::string> argv) const {
        SpawnOptions out;
        out.argv = std::move(argv);
        out.env = {kPath};
        out.cgroup_fd = agent_->fd();
        return out;
    }

    // Runs to the end with stdout and stderr into one pipe.
    static Ran run(SpawnOptions spawn_options) {
        Pipe out;
        spawn_options.stdout_fd = out.write.get();
        spawn_options.stderr_fd = out.write.get();
        auto process = spawn(spawn_options);
        out.write.reset();
        std::string text = read_all(out.read.get());
        return {process.wait(), std::move(text)};
    }

    fs::path mount_;
    std::optional<Cgroup> root_;
    std::optional<Cgroup> agent_;
};

TEST_F(SpawnTest, RunsWithArgvEnvAndWorkingDirectory) {
    testing::TempDir dir;
    fs::permissions(dir.path(), fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
    const UniqueFd cwd(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto spawn_options =
        options({"sh", "-c", "echo \"$0|$1|$2\"; echo \"$GREETING|${HOME-unset}\"; pwd", "zero", "one two", "three"});
    spawn_options.env.emplace_back("GREETING=hello world");
    spawn_options.cwd_fd = cwd.get();
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, "zero|one two|three\nhello world|unset\n" + dir.path().string() + "\n");

    // Without cwd_fd the agent starts in "/".
    EXPECT_EQ(run(options({"sh", "-c", "pwd"})).out, "/\n");
}

TEST_F(SpawnTest, ExitCodesAndSignals) {
    EXPECT_EQ(run(options({"sh", "-c", "exit 7"})).status, 7);
    EXPECT_EQ(run(options({"sh", "-c", "kill -KILL $$"})).status, 128 + SIGKILL);

    auto process = spawn(options({"sleep", "1000"}));
    EXPECT_GT(process.pid(), 0);
    EXPECT_GE(process.pidfd(), 0);
    EXPECT_EQ(process.try_wait(), std::nullopt);
    process.signal(SIGTERM);
    EXPECT_EQ(process.wait(), 128 + SIGTERM);
    EXPECT_EQ(process.try_wait(), 128 + SIGTERM);
    EXPECT_NO_THROW(process.signal(SIGTERM));  // already gone: not an error
}

TEST_F(SpawnTest, StartsInsideItsCgroup) {
    // With a cgroup namespace its own cgroup is its root.
    Pipe in;
    Pipe out;
    auto spawn_options =
        options({"sh", "-c", "grep '^0::' /proc/self/cgroup; grep '^0::' /proc/$$/cgroup; read x; exit 0"});
    spawn_options.stdin_fd = in.read.get();
    spawn_options.stdout_fd = out.write.get();
    auto process = spawn(spawn_options);
    out.write.reset();
    std::string text;
    ASSERT_TRUE(read_until(out.read.get(), "0::/\n0::/\n", text)) << text;
    EXPECT_EQ(text, "0::/\n0::/\n");
    EXPECT_TRUE(contains(agent_->processes(), process.pid()));
    std::ifstream procs(agent_->path() / "cgroup.procs");
    std::vector<pid_t> pids;
    for (pid_t pid = 0; procs >> pid;) pids.push_back(pid);
    EXPECT_TRUE(contains(pids, process.pid()));
    in.write.reset();
    EXPECT_EQ(process.wait(), 0);

    // Without one it sees the real path below the mount.
    spawn_options = options({"sh", "-c", "grep '^0::' /proc/self/cgroup"});
    spawn_options.new_cgroup_namespace = false;
    const auto relative = agent_->path().lexically_relative(mount_);
    EXPECT_EQ(run(spawn_options).out, "0::/" + relative.string() + "\n");
}

TEST_F(SpawnTest, RunsAsTheUidGidAndGroupsAsked) {
    auto spawn_options = options({"sh", "-c", "id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status"});
    spawn_options.uid = 1234;
    spawn_options.gid = 2345;
    spawn_options.groups = {3456, 4567};
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out,
              "1234\n2345\n2345 3456 4567\n"
              "Uid:\t1234\t1234\t1234\t1234\nGid:\t2345\t2345\t2345\t2345\nGroups:\t3456 4567 \n");
}

TEST_F(SpawnTest, HasNoCapabilitiesAndNoNewPrivsAsNobodyAndAsRoot) {
    for (const uid_t uid : {65534U, 0U}) {
        SCOPED_TRACE("uid " + std::to_string(uid));
        Pipe in;
        Pipe out;
        auto spawn_options = options({"sh", "-c", "echo ready; read x; exit 0"});
        spawn_options.uid = uid;
        spawn_options.gid = uid;
        spawn_options.stdin_fd = in.read.get();
        spawn_options.stdout_fd = out.write.get();
        auto process = spawn(spawn_options);
        out.write.reset();
        std::string text;
        ASSERT_TRUE(read_until(out.read.get(), "ready\n", text));
        auto status = status_of(process.pid());
        for (const char* field : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
            EXPECT_EQ(status[field], "0000000000000000") << field;
        }
        EXPECT_EQ(status["NoNewPrivs"], "1");
        EXPECT_EQ(status["Uid"], std::to_string(uid) + "\t" + std::to_string(uid) + "\t" + std::to_string(uid) + "\t" +
                                     std::to_string(uid));
        EXPECT_EQ(status["Groups"], "");
        in.write.reset();
        EXPECT_EQ(process.wait(), 0);
    }
}

TEST_F(SpawnTest, CannotMoveItselfOutOfItsCgroupNamespace) {
    const std::string escape =
        "if echo $$ > " + root_->path().string() + "/cgroup.procs; then echo moved; else echo refused; fi";
    for (const uid_t uid : {0U, 65534U}) {
        SCOPED_TRACE("uid " + std::to_string(uid));
        auto spawn_options = options({"sh", "-c", escape + "; grep '^0::' /proc/self/cgroup"});
        spawn_options.uid = uid;
        spawn_options.gid = uid;
        const auto ran = run(spawn_options);
        EXPECT_NE(ran.out.find("refused\n0::/\n"), std::string::npos) << ran.out;
        EXPECT_EQ(ran.out.find("moved"), std::string::npos) << ran.out;
        std::ifstream procs(root_->path() / "cgroup.procs");
        std::string left;
        EXPECT_FALSE(procs >> left) << "a process moved into the parent: " << left;
    }
    // Why the namespace matters: uid 0 without capabilities can still write root-owned cgroup.procs files.
    auto spawn_options = options({"sh", "-c", escape});
    spawn_options.uid = 0;
    spawn_options.gid = 0;
    spawn_options.new_cgroup_namespace = false;
    EXPECT_EQ(run(spawn_options).out, "moved\n");
}

TEST_F(SpawnTest, NetworkNamespaceCutsItOffTheHostsLoopback) {
    const testing::LoopbackListener host;
    const std::string dial =
        "if exec 3<>/dev/tcp/127.0.0.1/" + host.port_text() + "; then echo connected; else echo failed; fi";
    const auto ns = NetworkNamespace::create();
    auto spawn_options = options({"bash", "-c", dial + " 2>/dev/null"});
    spawn_options.netns_fd = ns.fd();
    EXPECT_EQ(run(spawn_options).out, "failed\n");
    EXPECT_EQ(host.accept(300ms), -1) << "the host listener saw a connection";

    // Inside, a listener of its own namespace is reachable.
    const auto inside = ns.listen_tcp(*proxy::Endpoint::parse("127.0.0.1:0"));
    const auto inside_port = std::to_string(local_endpoint(inside.get()).port);
    spawn_options.argv = {"bash", "-c", "if exec 3<>/dev/tcp/127.0.0.1/" + inside_port + "; then echo connected; fi"};
    EXPECT_EQ(run(spawn_options).out, "connected\n");

    // A control: without netns_fd the same dial reaches the host listener.
    spawn_options = options({"bash", "-c", dial});
    EXPECT_EQ(run(spawn_options).out, "connected\n");
    const int accepted = host.accept(2s);
    EXPECT_GE(accepted, 0);
    if (accepted >= 0) ::close(accepted);
}

TEST_F(SpawnTest, BindMountedFileReplacesTheTargetOnlyInside) {
    testing::TempDir dir;
    fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                    fs::perms::others_read | fs::perms::others_exec);
    const auto target = dir.path() / "ca-bundle.crt";
    const auto source = dir.path() / "agent-ca.crt";
    std::ofstream(target) << "original\n";
    std::ofstream(source) << "replacement\n";
    auto spawn_options = options(
        {"sh", "-c",
         "cat " + target.string() + "; if (echo x > " + target.string() +
             ") 2>/dev/null; then echo writable; else echo read-only; fi; grep -c ca-bundle /proc/self/mountinfo"});
    spawn_options.uid = 0;
    spawn_options.gid = 0;
    spawn_options.binds = {{source.string(), {target.string(), (dir.path() / "missing.crt").string()}}};
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, "replacement\nread-only\n1\n");
    std::ifstream host(target);
    std::string contents;
    std::getline(host, contents);
    EXPECT_EQ(contents, "original");
    EXPECT_FALSE(fs::exists(dir.path() / "missing.crt"));
    std::ifstream mountinfo("/proc/self/mountinfo");
    const std::string mounts((std::istreambuf_iterator<char>(mountinfo)), std::istreambuf_iterator<char>());
    EXPECT_EQ(mounts.find(target.string()), std::string::npos) << "the bind leaked into the host";

    spawn_options.binds = {{(dir.path() / "no-such-source").string(), {target.string()}}};
    EXPECT_THROW((void)spawn(spawn_options), std::system_error);
}

TEST_F(SpawnTest, ExecFailureThrowsNamingTheProgramAndLeavesNothing) {
    try {
        (void)spawn(options({"tf-no-such-program", "--flag"}));
        ADD_FAILURE() << "spawned a missing program";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_EQ(std::string(e.what()), "execve tf-no-such-program: No such file or directory");
    }
    EXPECT_TRUE(agent_->processes().empty());
    EXPECT_FALSE(agent_->populated());

    // A file the agent may not execute: EACCES, as execvpe reports it.
    testing::TempDir dir;
    fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::others_exec);
    const auto script = dir.path() / "not-executable";
    std::ofstream(script) << "#!/bin/sh\n";
    try {
        (void)spawn(options({script.string()}));
        ADD_FAILURE() << "executed a non-executable file";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EACCES);
        EXPECT_NE(std::string(e.what()).find("execve " + script.string() + ": Permission denied"), std::string::npos)
            << e.what();
    }
    EXPECT_FALSE(agent_->populated());

    auto no_cgroup = options({"true"});
    no_cgroup.cgroup_fd = -1;
    EXPECT_THROW((void)spawn(no_cgroup), std::invalid_argument);
}

TEST_F(SpawnTest, OnlyStdioIsInherited) {
    const UniqueFd leaked(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC: close_range must catch it
    ASSERT_GE(leaked.get(), 3);
    const auto fd = std::to_string(leaked.get());
    const auto ran = run(options({"sh", "-c", "ls /proc/$$/fd; [ -e /proc/$$/fd/" + fd + " ] && echo leaked"}));
    EXPECT_EQ(ran.out, "0\n1\n2\n") << ran.out;
}

TEST_F(SpawnTest, DoubleForkedSetsidGrandchildStaysInTheCgroup) {
    // The grandchild prints its pid once it leads its own session; the agent exits at once. Without a PID
    // namespace (whose end would take the grandchild with it) the cgroup alone holds it.
    auto spawn_options = options({"sh", "-c",
                                  "( (setsid sh -c 'echo $$; exec sleep 1000 >/dev/null' </dev/null 2>/dev/null &) "
                                  "| head -n1 )"});
    spawn_options.pid_namespace = false;
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0);
    ASSERT_FALSE(ran.out.empty());
    const pid_t grandchild = std::stoi(ran.out);
    EXPECT_EQ(agent_->processes(), std::vector<pid_t>{grandchild});
    EXPECT_EQ(::getsid(grandchild), grandchild) << "the grandchild leads its own session";
    EXPECT_TRUE(agent_->populated());
    EXPECT_TRUE(agent_->remove(5s));
    EXPECT_FALSE(fs::exists(agent_->path()));
}

// The PID namespace: the command is PID 2 under a small init, sees no other process, gets the signals sent to
// the init, and its status is the init's.
TEST_F(SpawnTest, TheCommandRunsUnderAnInitInItsOwnPidNamespace) {
    const auto ran = run(options({"sh", "-c", "echo $$ $PPID; echo /proc/[0-9]*"}));
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, "2 1\n/proc/2\n") << "only itself in /proc (the init is not dumpable: hidden too)";

    Pipe out;
    auto spawn_options =
        options({"sh", "-c", "trap 'echo usr1; exit 42' USR1; echo ready; while :; do sleep 0.05; done"});
    spawn_options.stdout_fd = out.write.get();
    auto process = spawn(spawn_options);
    out.write.reset();
    std::string text;
    ASSERT_TRUE(read_until(out.read.get(), "ready\n", text)) << text;
    process.signal(SIGUSR1);
    EXPECT_EQ(process.wait(), 42);
    EXPECT_EQ(read_all(out.read.get()), "usr1\n");
    EXPECT_EQ(run(options({"sh", "-c", "kill -TERM $$"})).status, 128 + SIGTERM);
}

TEST_F(SpawnTest, WhateverTheCommandLeftEndsWithIt) {
    const auto ran = run(options({"sh", "-c", "(setsid sleep 1000 </dev/null >/dev/null 2>&1 &); exit 3"}));
    EXPECT_EQ(ran.status, 3);
    // The init's exit ends the namespace: the kernel kills the rest.
    for (int i = 0; i < 100 && agent_->populated(); ++i) std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(agent_->populated());
}

TEST_F(SpawnTest, ProcShowsTheGlobalFilesOnlyWhenAsked) {
    EXPECT_EQ(run(options({"sh", "-c", "test -e /proc/meminfo && echo meminfo; exit 0"})).out, "")
        << "subset=pid hides /proc's global files";
    auto spawn_options = options({"sh", "-c", "test -e /proc/meminfo && echo meminfo; echo /proc/[0-9]*"});
    spawn_options.proc_pids_only = false;
    EXPECT_EQ(run(spawn_options).out, "meminfo\n/proc/2\n");
}

// The command's Landlock domain: no ptrace of its init (outside the domain, not dumpable).
TEST_F(SpawnTest, TheCommandCannotTraceItsInit) {
    const int abi = landlock_abi();
    if (abi == 0) GTEST_SKIP() << "Landlock is not enabled in this kernel";
    const LandlockPolicy landlock;
    auto spawn_options =
        options({"python3", "-c",
                 "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                 "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]; "
                 "print(libc.ptrace(16, 1, None, None), ctypes.get_errno())"});
    spawn_options.uid = 65534;
    spawn_options.gid = 65534;
    spawn_options.landlock = &landlock;
    spawn_options.landlock_abi = abi;
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, "-1 " + std::to_string(EPERM) + "\n");
}

// From ABI 6: no signal to, and no abstract socket of, a same-uid process outside the domain. Without a PID
// namespace, so that the process outside can be named at all.
TEST_F(SpawnTest, LandlockScopesSignalsAndAbstractSocketsToTheDomain) {
    const int abi = landlock_abi();
    if (abi < kLandlockScopeAbi) GTEST_SKIP() << "Landlock ABI " << abi << " has no scopes (6+)";
    auto outside = spawn(options({"sleep", "1000"}));
    const UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    const std::string name = "tf-spawn-test-" + std::to_string(::getpid());
    std::memcpy(at.sun_path + 1, name.data(), name.size());
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&at),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())),
              0);
    ASSERT_EQ(::listen(listener.get(), 4), 0);
    const std::string script =
        "import os, socket\n"
        "try:\n os.kill(" +
        std::to_string(outside.pid()) +
        ", 0); print('signalled')\n"
        "except OSError as e: print('kill', e.errno)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect('\\0" +
        name +
        "'); print('connected')\n"
        "except OSError as e: print('connect', e.errno)\n"
        "os.kill(os.getpid(), 0); print('self')\n";
    for (const bool scoped : {false, true}) {
        SCOPED_TRACE(scoped ? "in a Landlock domain" : "without one");
        const LandlockPolicy landlock;
        auto spawn_options = options({"python3", "-c", script});
        spawn_options.pid_namespace = false;
        if (scoped) {
            spawn_options.landlock = &landlock;
            spawn_options.landlock_abi = abi;
        }
        const auto ran = run(spawn_options);
        EXPECT_EQ(ran.status, 0) << ran.out;
        EXPECT_EQ(ran.out, scoped ? "kill " + std::to_string(EPERM) + "\nconnect " + std::to_string(EPERM) + "\nself\n"
                                  : std::string("signalled\nconnected\nself\n"));
        const UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        EXPECT_EQ(static_cast<bool>(accepted), !scoped);
    }
    outside.signal(SIGKILL);
    outside.wait();
}

// The fallback without the unix socket filter: a service's socket covered by /dev/null, a directory of sockets
// by an empty tmpfs, in the agent's mount namespace only; names that do not exist there are skipped.
TEST_F(SpawnTest, MaskedSocketsAndHiddenDirectoriesAreGoneInsideOnly) {
    testing::TempDir dir;
    fs::permissions(dir.path(), fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
    fs::create_directories(dir.path() / "run");
    const fs::path socket_path = dir.path() / "service.sock";
    const UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    std::memcpy(at.sun_path, socket_path.c_str(), socket_path.string().size());
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
    ASSERT_EQ(::listen(listener.get(), 4), 0);
    std::ofstream(dir.path() / "run" / "bus") << "x";
    auto spawn_options = options({"python3", "-c",
                                  "import socket, os, sys\ns = socket.socket(socket.AF_UNIX)\n"
                                  "try:\n s.connect(sys.argv[1]); print('connected')\n"
                                  "except OSError as e: print('connect', e.errno)\n"
                                  "print(sorted(os.listdir(sys.argv[2])))\n",
                                  socket_path.string(), (dir.path() / "run").string()});
    spawn_options.mask = {socket_path.string(), "/no/such/socket"};
    spawn_options.hide = {(dir.path() / "run").string(), "/no/such/directory"};
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, "connect " + std::to_string(ECONNREFUSED) + "\n[]\n");
    EXPECT_EQ(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC), -1);
    EXPECT_TRUE(fs::exists(dir.path() / "run" / "bus")) << "outside, nothing changed";
}

// A private /tmp: the host's files are not there, the agent's stay inside, and a working directory that lies in /tmp
// is carried in at the same path (relative paths from it still see the agent's mounts).
TEST_F(SpawnTest, PrivateTmpIsTheAgentsOwnAndCarriesTheWorkingDirectoryIn) {
    testing::TempDir dir("tf-spawn-tmp", "/tmp");
    fs::permissions(dir.path(), fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
    std::ofstream(dir.path() / "mine") << "carried\n";
    const fs::path host_file = dir.path().parent_path() / ("tf-spawn-host-" + std::to_string(::getpid()));
    std::ofstream(host_file) << "host\n";
    const UniqueFd cwd(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto spawn_options = options({"sh", "-c",
                                  "pwd; cat mine; ls /tmp | tr '\\n' ' '; echo; test -e \"$0\" && echo host-visible; "
                                  "echo agent > /tmp/agent-file && echo wrote",
                                  host_file.string()});
    spawn_options.cwd_fd = cwd.get();
    spawn_options.cwd_path = dir.path().string();
    spawn_options.private_tmp = {"/tmp", "/no/such/tmp"};
    const auto ran = run(spawn_options);
    fs::remove(host_file);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out, dir.path().string() + "\ncarried\n" + dir.path().filename().string() + " \nwrote\n");
    EXPECT_FALSE(fs::exists("/tmp/agent-file"));

    // Launched in /tmp itself, the agent works in its own, empty one.
    const UniqueFd tmp(::open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto in_tmp = options({"sh", "-c", "pwd; ls -A | wc -l"});
    in_tmp.cwd_fd = tmp.get();
    in_tmp.cwd_path = "/tmp";
    in_tmp.private_tmp = {"/tmp"};
    EXPECT_EQ(run(in_tmp).out, "/tmp\n0\n");
}

// Protected paths are read-only binds; the directories leading to them are pinned, so that neither they nor the
// protected paths can be renamed away and replaced. A hidden file reads as empty.
TEST_F(SpawnTest, ProtectedPathsStayReadOnlyAndCannotBeMovedAway) {
    testing::TempDir dir("tf-spawn-protect", testing::kAgentVisibleBase);
    fs::create_directories(dir.path() / ".git" / "hooks");
    std::ofstream(dir.path() / ".git" / "config") << "[core]\n";
    std::ofstream(dir.path() / "secret") << "SECRET\n";
    ::chown(dir.path().c_str(), 65534, 65534);
    for (const auto& entry : fs::recursive_directory_iterator(dir.path())) ::chown(entry.path().c_str(), 65534, 65534);
    const UniqueFd cwd(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto spawn_options = options({"sh", "-c",
                                  "{ echo x > .git/hooks/pre-commit; } 2>/dev/null || echo hook-refused; "
                                  "{ echo x >> .git/config; } 2>/dev/null || echo config-refused; "
                                  "mv .git/config .git/config.old 2>/dev/null || echo config-stays; "
                                  "mv .git .git.old 2>/dev/null || echo git-stays; "
                                  "echo x > .git/index && echo index-written; "
                                  "echo \"secret=[$(cat secret)]\"; "
                                  "echo x > free && echo free-written"});
    spawn_options.uid = 65534;
    spawn_options.gid = 65534;
    spawn_options.cwd_fd = cwd.get();
    spawn_options.cwd_path = dir.path().string();
    spawn_options.pins = {(dir.path() / ".git").string()};
    spawn_options.protect = {(dir.path() / ".git" / "hooks").string(), (dir.path() / ".git" / "config").string(),
                             (dir.path() / ".envrc").string()};
    spawn_options.hide = {(dir.path() / "secret").string()};
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    EXPECT_EQ(ran.out,
              "hook-refused\nconfig-refused\nconfig-stays\ngit-stays\nindex-written\nsecret=[]\nfree-written\n");
    EXPECT_EQ(slurp_file(dir.path() / ".git" / "config"), "[core]\n");
    EXPECT_EQ(slurp_file(dir.path() / "secret"), "SECRET\n") << "outside, nothing changed";
}

// A working directory the agent would not see (hidden, or another directory at that path) refuses the launch.
TEST_F(SpawnTest, AWorkingDirectoryHiddenFromTheAgentIsRefusedWithTheReason) {
    testing::TempDir dir("tf-spawn-hidden", testing::kAgentVisibleBase);
    fs::create_directories(dir.path() / "keys" / "inner");
    const UniqueFd cwd(::open((dir.path() / "keys" / "inner").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto spawn_options = options({"true"});
    spawn_options.cwd_fd = cwd.get();
    spawn_options.cwd_path = (dir.path() / "keys" / "inner").string();
    spawn_options.hide = {(dir.path() / "keys").string()};
    try {
        spawn(spawn_options);
        ADD_FAILURE() << "spawned in a hidden working directory";
    } catch (const std::exception& error) {
        EXPECT_NE(std::string(error.what()).find("hidden from agents"), std::string::npos) << error.what();
    }
    spawn_options.hide.clear();
    spawn_options.cwd_path = dir.path().string();  // not the directory cwd_fd names
    EXPECT_THROW(spawn(spawn_options), std::exception);
}

// The seccomp filter: no new user namespace, by unshare, clone or clone3 (ENOSYS: libc falls back to clone, so
// threads and children still work).
TEST_F(SpawnTest, TheSeccompFilterRefusesNewUserNamespacesOnly) {
    const SeccompProgram seccomp = agent_seccomp_program();
    ASSERT_FALSE(seccomp.instructions.empty());
    auto spawn_options =
        options({"python3", "-c",
                 "import ctypes, os, subprocess, threading\n"
                 "libc = ctypes.CDLL(None, use_errno=True)\n"
                 "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
                 "print('clone3', libc.syscall(435, None, 0), ctypes.get_errno())\n"
                 "t = threading.Thread(target=lambda: print('thread')); t.start(); t.join()\n"
                 "print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())\n"
                 "print('unshare-uts', libc.unshare(0x04000000), ctypes.get_errno())\n"});
    spawn_options.seccomp = &seccomp;
    const auto ran = run(spawn_options);
    EXPECT_EQ(ran.status, 0) << ran.out;
    // Other namespaces are refused by the kernel as before (no CAP_SYS_ADMIN): EPERM, not the filter's doing.
    EXPECT_EQ(ran.out, "unshare -1 " + std::to_string(EPERM) + "\nclone3 -1 " + std::to_string(ENOSYS) +
                           "\nthread\nchild\nunshare-uts -1 " + std::to_string(EPERM) + "\n");
    // Without the filter the same agent may make a user namespace.
    spawn_options.seccomp = nullptr;
    EXPECT_EQ(run(spawn_options).out.rfind("unshare 0 ", 0), 0U);
}

}  // namespace
}  // namespace tameflare::netns
