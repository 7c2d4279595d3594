#include "netns/spawn.h"

#include "netns/error.h"

#include "netns/cgroup.h"
#include "policy/filesystem.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <fstream>
#include <string_view>
#include <system_error>

namespace tameflare::netns {
namespace {

using detail::fail;

// glibc 2.36's <sys/wait.h> lacks P_PIDFD (Linux 5.4).
constexpr auto kPidfdIdType = static_cast<idtype_t>(3);

// The securebits an agent keeps: uid 0 never regains capabilities, by exec or by setuid, and cannot undo it.
constexpr unsigned long kSecurebits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                      SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED;

// The steps of the child, in order; the child reports the index of the one that failed.
enum class Step : int {
    setsid,
    setns,
    enter_mount_namespace,
    unshare_cgroup,
    private_mounts,
    cgroupfs_read_only,
    bind_mount,
    remount_read_only,
    find_working_directory,
    private_tmp,
    carry_working_directory,
    pin,
    protect,
    hide_directory,
    mask_file,
    mount_proc,
    dup_stdio,
    fchdir,
    close_fds,
    setgroups,
    setresgid,
    drop_bounding_set,
    securebits,
    setresuid,
    clear_ambient,
    capset,
    no_new_privs,
    not_dumpable,
    fork_command,
    landlock,
    seccomp,
    signals,
    execve,
};

constexpr std::array<std::string_view, 33> kStepNames = {
    "setsid",
    "setns into the network namespace",
    "enter the caller's mount namespace (setns, then unshare CLONE_NEWNS)",
    "unshare the cgroup namespace",
    "make mounts private (mount MS_REC|MS_PRIVATE /)",
    "remount the cgroup filesystem read-only",
    "bind-mount",
    "remount read-only",
    "find the working directory in the agent's mount namespace",
    "mount a private tmpfs over",
    "carry the working directory into the private tmp directory",
    "pin (bind-mount onto itself)",
    "protect (bind-mount read-only)",
    "hide (an empty tmpfs over a directory, /dev/null over a file)",
    "hide a socket (bind-mount /dev/null over it)",
    "mount the PID namespace's procfs over /proc",
    "dup2 stdio",
    "fchdir into the working directory",
    "close file descriptors",
    "setgroups",
    "setresgid",
    "drop the capability bounding set",
    "set securebits",
    "setresuid",
    "clear ambient capabilities",
    "capset to zero",
    "set no_new_privs",
    "make the init not dumpable",
    "fork the command from the PID namespace's init",
    "enter the Landlock domain",
    "install the seccomp filter",
    "reset signals",
    "execve",
};

struct ChildError {
    int step = 0;
    int err = 0;
    int detail = 0;  // which bind, for the bind steps
};

// Everything the child needs, made by the parent: between clone3 and execve the child must not allocate (another
// thread may have held the allocator's lock at the clone) and calls only syscalls and async-signal-safe functions.
struct ChildPlan {
    int error_fd = -1;
    int netns_fd = -1;
    int mount_namespace_fd = -1;
    bool new_cgroup_namespace = true;
    std::vector<std::pair<const char*, unsigned long>> cgroup_mounts;  // mount point, its flags
    std::vector<std::pair<const char*, const char*>> binds;            // source, existing target
    const char* cwd_path = nullptr;                                    // nullptr: fchdir(cwd_fd)
    dev_t cwd_dev = 0;                                                 // cwd_fd's
    ino_t cwd_ino = 0;
    std::vector<const char*> private_tmp;
    // When the working directory lies in private_tmp[carry_tmp]: the directories to make in its tmpfs, outer first.
    int carry_tmp = -1;
    std::vector<const char*> carry_dirs;
    bool cwd_is_tmp = false;  // the working directory is a private tmp directory itself: it becomes the tmpfs
    std::vector<const char*> pins;
    std::vector<const char*> protect;
    std::vector<const char*> hidden;  // paths to cover
    std::vector<const char*> masked;  // existing files to cover
    bool pid_namespace = false;
    bool proc_pids_only = true;
    LandlockPlan landlock;
    const SeccompProgram* seccomp = nullptr;
    std::array<int, 3> stdio{-1, -1, -1};
    int cwd_fd = -1;
    const gid_t* groups = nullptr;
    std::size_t group_count = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    int cap_last = 0;
    char* const* argv = nullptr;
    char* const* envp = nullptr;
    std::vector<const char*> candidates;  // argv[0], or each PATH entry joined with it
};

[[noreturn]] void child_fail(const ChildPlan& plan, Step step, int err, int detail = 0) {
    const ChildError report{static_cast<int>(step), err, detail};
    // The parent reads one whole record or nothing; a short write leaves it with "child died".
    [[maybe_unused]] const ssize_t ignored = ::write(plan.error_fd, &report, sizeof report);
    ::_exit(127);
}

// The command's own process: its Landlock domain, default signals, execve.
[[noreturn]] void exec_command(const ChildPlan& plan) {
    int failed_rule = -1;
    if (const int error = apply_landlock(plan.landlock, failed_rule); error != 0) {
        child_fail(plan, Step::landlock, error, failed_rule);
    }
    if (plan.seccomp != nullptr) {
        if (const int error = load_seccomp(*plan.seccomp); error != 0) child_fail(plan, Step::seccomp, error);
    }
    // Ignored signals stay ignored across execve, and the parent blocked every signal around clone3.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        ::sigaction(sig, &default_action, nullptr);  // fails only for glibc's internal signals, which is fine
    }
    sigset_t empty;
    ::sigemptyset(&empty);
    if (::sigprocmask(SIG_SETMASK, &empty, nullptr) != 0) child_fail(plan, Step::signals, errno);
    // execvpe's search, over paths the parent built: go on past ENOENT-like errors, remember EACCES.
    int last_error = ENOENT;
    bool denied = false;
    for (const char* candidate : plan.candidates) {
        ::execve(candidate, plan.argv, plan.envp);
        switch (errno) {
            case EACCES: denied = true; [[fallthrough]];
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT: last_error = errno; continue;
            default: child_fail(plan, Step::execve, errno);
        }
    }
    child_fail(plan, Step::execve, denied ? EACCES : last_error);
}

// The PID namespace's init: every signal stays blocked (the parent blocked them all around clone3) and is taken
// with sigwaitinfo, so none is dropped for want of a handler (the kernel drops default-action signals sent to a
// namespace's init) and none stops it. Each is passed on to the command; children are reaped; the command's
// end is the init's, with its status, and the kernel then kills whatever else is left in the namespace.
[[noreturn]] void run_init(pid_t command) {
    // Its copies of stdio and of the error pipe would hold them open after the command closed them.
    ::syscall(SYS_close_range, 0U, ~0U, 0U);
    sigset_t all;
    ::sigfillset(&all);
    for (;;) {
        siginfo_t info{};
        const int sig = ::sigwaitinfo(&all, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            ::kill(command, sig);
            continue;
        }
        int status = 0;
        pid_t pid = 0;
        while ((pid = ::wait4(-1, &status, WNOHANG, nullptr)) > 0) {
            if (pid == command) ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
}

// Bind-mounts `source` onto `target` and makes the bind read-only, keeping the flags the file system was mounted
// with (nosuid, nodev, noexec) that a plain remount would clear. False with errno set.
bool bind_read_only(const char* source, const char* target, bool recursive) {
    if (::mount(source, target, nullptr, MS_BIND | (recursive ? MS_REC : 0), nullptr) != 0) return false;
    struct statfs info {};
    if (::syscall(SYS_statfs, target, &info) != 0) return false;
    unsigned long keep = 0;
    if ((info.f_flags & ST_NOSUID) != 0) keep |= MS_NOSUID;
    if ((info.f_flags & ST_NODEV) != 0) keep |= MS_NODEV;
    if ((info.f_flags & ST_NOEXEC) != 0) keep |= MS_NOEXEC;
    return ::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, nullptr) == 0;
}

// The gateway's filesystem section, in the agent's mount namespace: a private /tmp and /var/tmp (the working
// directory carried in when it lies there), pinned directories, protected paths.
void filesystem_mounts(const ChildPlan& plan) {
    UniqueFd cwd_here;
    if (plan.cwd_path != nullptr) {
        // The agent's copy of the working directory, before a tmpfs may cover it.
        cwd_here = UniqueFd(::open(plan.cwd_path, O_PATH | O_DIRECTORY | O_CLOEXEC));
        struct stat info {};
        if (!cwd_here || ::fstat(cwd_here.get(), &info) != 0) child_fail(plan, Step::find_working_directory, errno);
        if (info.st_dev != plan.cwd_dev || info.st_ino != plan.cwd_ino) {
            child_fail(plan, Step::find_working_directory, EXDEV);
        }
    }
    for (std::size_t i = 0; i < plan.private_tmp.size(); ++i) {
        struct stat info {};
        if (::stat(plan.private_tmp[i], &info) != 0 || !S_ISDIR(info.st_mode)) continue;
        if (::mount("tameflare-tmp", plan.private_tmp[i], "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) {
            child_fail(plan, Step::private_tmp, errno, static_cast<int>(i));
        }
        if (plan.carry_tmp != static_cast<int>(i)) continue;
        for (const char* directory : plan.carry_dirs) {
            if (::mkdir(directory, 0755) != 0 && errno != EEXIST) {
                child_fail(plan, Step::carry_working_directory, errno);
            }
        }
        // "." is the agent's copy found above: a bind's source must be in the same mount namespace.
        if (::fchdir(cwd_here.get()) != 0 || ::mount(".", plan.cwd_path, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
            child_fail(plan, Step::carry_working_directory, errno);
        }
    }
    cwd_here.reset();
    for (std::size_t i = 0; i < plan.pins.size(); ++i) {
        struct stat info {};
        if (::lstat(plan.pins[i], &info) != 0 || S_ISLNK(info.st_mode)) continue;
        const bool pinned = S_ISDIR(info.st_mode)
                                ? ::mount(plan.pins[i], plan.pins[i], nullptr, MS_BIND | MS_REC, nullptr) == 0
                                : bind_read_only(plan.pins[i], plan.pins[i], false);
        if (!pinned) child_fail(plan, Step::pin, errno, static_cast<int>(i));
    }
    for (std::size_t i = 0; i < plan.protect.size(); ++i) {
        struct stat info {};
        if (::stat(plan.protect[i], &info) != 0) continue;
        if (!bind_read_only(plan.protect[i], plan.protect[i], true)) {
            child_fail(plan, Step::protect, errno, static_cast<int>(i));
        }
    }
}

// One piece over 100 lines: the child's steps between clone and exec, each reporting its step and exiting on
// failure; read top to bottom, their order is the security argument (docs/enforcement.md).
// NOLINTNEXTLINE(readability-function-size)
[[noreturn]] void child_main(const ChildPlan& plan) {
    if (::setsid() < 0) child_fail(plan, Step::setsid, errno);
    if (plan.netns_fd >= 0 && ::setns(plan.netns_fd, CLONE_NEWNET) != 0) child_fail(plan, Step::setns, errno);
    // The caller's view, then a private copy of it (setns joins the namespace itself).
    if (plan.mount_namespace_fd >= 0 &&
        (::setns(plan.mount_namespace_fd, CLONE_NEWNS) != 0 || ::unshare(CLONE_NEWNS) != 0)) {
        child_fail(plan, Step::enter_mount_namespace, errno);
    }
    // Now that the process is in its cgroup, that cgroup becomes the root of everything it can see or move into.
    if (plan.new_cgroup_namespace && ::unshare(CLONE_NEWCGROUP) != 0) child_fail(plan, Step::unshare_cgroup, errno);
    // Our mount namespace is a copy of the daemon's; without this, the binds would propagate back to the host.
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
        child_fail(plan, Step::private_mounts, errno);
    }
    // Without nsdelegate on the cgroup2 mount, a cgroup namespace does not stop a uid-0 agent (which owns the
    // root-owned cgroup.procs files) from moving itself out: the cgroup filesystems become read-only for it.
    for (std::size_t i = 0; i < plan.cgroup_mounts.size(); ++i) {
        const auto [mount_point, flags] = plan.cgroup_mounts[i];
        if (::mount(nullptr, mount_point, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, nullptr) != 0) {
            child_fail(plan, Step::cgroupfs_read_only, errno, static_cast<int>(i));
        }
    }
    for (std::size_t i = 0; i < plan.binds.size(); ++i) {
        const auto [source, target] = plan.binds[i];
        if (::mount(source, target, nullptr, MS_BIND, nullptr) != 0) {
            child_fail(plan, Step::bind_mount, errno, static_cast<int>(i));
        }
        if (::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
            child_fail(plan, Step::remount_read_only, errno, static_cast<int>(i));
        }
    }
    filesystem_mounts(plan);
    // The daemon's state, whatever the agent's uid (a uid-0 agent without capabilities still owns root's 0600
    // files), and the user's keys. Whether each exists is asked here, in the agent's mount namespace: the daemon's
    // own view may differ (ProtectHome=, PrivateTmp=).
    for (std::size_t i = 0; i < plan.hidden.size(); ++i) {
        const char* path = plan.hidden[i];
        struct stat info {};
        if (::stat(path, &info) != 0) continue;
        const int failed = S_ISDIR(info.st_mode)
                               ? (::mount("tameflare-hidden", path, "tmpfs",
                                          MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") != 0)
                               : !bind_read_only("/dev/null", path, false);
        if (failed) child_fail(plan, Step::hide_directory, errno, static_cast<int>(i));
    }
    for (std::size_t i = 0; i < plan.masked.size(); ++i) {
        struct stat info {};
        if (::lstat(plan.masked[i], &info) != 0 || S_ISDIR(info.st_mode) || S_ISLNK(info.st_mode)) continue;
        if (::mount("/dev/null", plan.masked[i], nullptr, MS_BIND, nullptr) != 0 ||
            ::mount(nullptr, plan.masked[i], nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
            child_fail(plan, Step::mask_file, errno, static_cast<int>(i));
        }
    }
    // The PID namespace's own procfs: /proc shows the agent's processes and no other. hidepid=2 is
    // "invisible" on every kernel; subset=pid (5.8) also hides the global files, and is left out where the kernel
    // does not know it.
    if (plan.pid_namespace) {
        constexpr unsigned long kProcFlags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
        if ((!plan.proc_pids_only || ::mount("proc", "/proc", "proc", kProcFlags, "hidepid=2,subset=pid") != 0) &&
            ::mount("proc", "/proc", "proc", kProcFlags, "hidepid=2") != 0) {
            child_fail(plan, Step::mount_proc, errno);
        }
    }
    // The sources are all >= 3 (the parent made sure), so no dup2 overwrites another's source.
    for (int i = 0; i < 3; ++i) {
        if (::dup2(plan.stdio[static_cast<std::size_t>(i)], i) < 0) child_fail(plan, Step::dup_stdio, errno);
    }
    // Before close_range: cwd_fd is about to be closed. By path, so that relative paths see the agent's mounts.
    if (plan.cwd_path == nullptr) {
        if (::fchdir(plan.cwd_fd) != 0) child_fail(plan, Step::fchdir, errno);
    } else {
        struct stat here {};
        if (::chdir(plan.cwd_path) != 0 || ::stat(".", &here) != 0) child_fail(plan, Step::fchdir, errno);
        if (!plan.cwd_is_tmp && (here.st_dev != plan.cwd_dev || here.st_ino != plan.cwd_ino)) {
            child_fail(plan, Step::fchdir, EXDEV);
        }
    }
    // Every fd but 0-2 and the error pipe (CLOEXEC: execve closes it).
    if (plan.error_fd > 3 && ::syscall(SYS_close_range, 3U, static_cast<unsigned>(plan.error_fd - 1), 0U) != 0) {
        child_fail(plan, Step::close_fds, errno);
    }
    if (::syscall(SYS_close_range, static_cast<unsigned>(plan.error_fd + 1), ~0U, 0U) != 0) {
        child_fail(plan, Step::close_fds, errno);
    }
    // Raw syscalls: glibc's wrappers would try to apply the change to the parent's other threads, which the child
    // does not have.
    if (::syscall(SYS_setgroups, plan.group_count, plan.groups) != 0) child_fail(plan, Step::setgroups, errno);
    if (::syscall(SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0) child_fail(plan, Step::setresgid, errno);
    // While CAP_SETPCAP is still held: the bounding set and the securebits, for every uid (a non-root agent keeps
    // its bounding set across setresuid otherwise).
    for (int cap = 0; cap <= plan.cap_last; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) child_fail(plan, Step::drop_bounding_set, errno, cap);
    }
    if (::prctl(PR_SET_SECUREBITS, kSecurebits, 0, 0, 0) != 0) child_fail(plan, Step::securebits, errno);
    if (::syscall(SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0) child_fail(plan, Step::setresuid, errno);
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) child_fail(plan, Step::clear_ambient, errno);
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, 2> none{};
    if (::syscall(SYS_capset, &header, none.data()) != 0) child_fail(plan, Step::capset, errno);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(plan, Step::no_new_privs, errno);
    if (!plan.pid_namespace) exec_command(plan);
    // PID 1 of the agent's namespace. It is a copy of the daemon's address space: not dumpable, so that no
    // process of the agent's uid may ptrace it or read its memory, and outside the command's Landlock domain.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) child_fail(plan, Step::not_dumpable, errno);
    // A raw fork: glibc's would run the daemon's atfork handlers.
    const long command = ::syscall(SYS_clone, SIGCHLD, 0, nullptr, nullptr, 0);
    if (command < 0) child_fail(plan, Step::fork_command, errno);
    if (command == 0) exec_command(plan);
    run_init(static_cast<pid_t>(command));
}

// A CLOEXEC duplicate numbered 3 or above, so the child's dup2 onto 0-2 never clobbers a source.
UniqueFd high_dup(int fd, const std::string& what) {
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!copy) fail(errno, "cannot duplicate " + what + " (fd " + std::to_string(fd) + ")");
    return copy;
}

int read_cap_last() {
    std::ifstream in("/proc/sys/kernel/cap_last_cap");
    int last = -1;
    if (!(in >> last) || last < 0 || last > 63) {
        throw std::runtime_error("cannot read /proc/sys/kernel/cap_last_cap; is /proc mounted?");
    }
    return last;
}

std::vector<std::string> exec_candidates(const std::vector<std::string>& env, const std::string& program) {
    if (program.find('/') != std::string::npos) return {program};
    std::string_view path = "/bin:/usr/bin";  // execvpe's default
    for (const auto& entry : env) {
        if (entry.rfind("PATH=", 0) == 0) path = std::string_view(entry).substr(5);
    }
    std::vector<std::string> out;
    std::size_t at = 0;
    for (;;) {
        const auto end = path.find(':', at);
        auto dir = path.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
        if (dir.empty()) dir = ".";  // an empty PATH entry means the working directory
        out.push_back(std::string(dir) + "/" + program);
        if (end == std::string_view::npos) break;
        at = end + 1;
    }
    return out;
}

std::string_view step_hint(Step step, int err) {
    if (err != EPERM && err != EACCES) return {};
    switch (step) {
        case Step::setgroups:
        case Step::setresgid:
        case Step::setresuid:
        case Step::drop_bounding_set:
        case Step::securebits:
        case Step::setns:
        case Step::private_mounts:
        case Step::cgroupfs_read_only:
        case Step::hide_directory:
        case Step::mask_file:
        case Step::private_tmp:
        case Step::carry_working_directory:
        case Step::pin:
        case Step::protect:
        case Step::mount_proc:
        case Step::bind_mount: return "tameflared needs root (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_SETPCAP)";
        case Step::execve: return "the program is not executable by the agent's uid";
        case Step::landlock: return "Landlock refused the agent's ruleset; tf doctor shows what this kernel offers";
        case Step::fchdir: return "the working directory is not accessible";
        default: return {};
    }
}

}  // namespace

void Process::signal(int sig) const {
    if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH) {
        fail(errno, "cannot send signal " + std::to_string(sig) + " to process " + std::to_string(pid_));
    }
}

std::optional<int> Process::wait_for(int options) {
    if (status_) return status_;
    siginfo_t info{};
    while (::waitid(kPidfdIdType, static_cast<id_t>(pidfd_.get()), &info, WEXITED | options) != 0) {
        if (errno != EINTR) fail(errno, "cannot wait for process " + std::to_string(pid_));
    }
    if (info.si_pid == 0) return std::nullopt;  // WNOHANG, still running
    status_ = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    return status_;
}

std::optional<int> Process::try_wait() {
    return wait_for(WNOHANG);
}

int Process::wait() {
    return *wait_for(0);
}

// One piece over 100 lines: the parent's side of a launch in the order the kernel needs it (pipes, clone3 into the
// cgroup, id maps, wait for the child's report); each step's clean-up is the RAII it holds.
// NOLINTNEXTLINE(readability-function-size)
Process spawn(const SpawnOptions& options) {
    if (options.argv.empty() || options.argv[0].empty()) throw std::invalid_argument("spawn: argv is empty");
    const std::string& program = options.argv[0];
    if (options.cgroup_fd < 0) {
        throw std::invalid_argument("spawn " + program + ": no cgroup_fd (an agent must start inside its cgroup)");
    }

    ChildPlan plan;
    std::vector<char*> argv;
    // execve takes char* const[] but does not write through it.
    for (const auto& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& entry : options.env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
    plan.argv = argv.data();
    plan.envp = envp.data();
    const auto candidates = exec_candidates(options.env, program);
    for (const auto& candidate : candidates) plan.candidates.push_back(candidate.c_str());

    UniqueFd dev_null;
    std::array<UniqueFd, 3> stdio;
    const std::array<int, 3> given{options.stdin_fd, options.stdout_fd, options.stderr_fd};
    for (std::size_t i = 0; i < 3; ++i) {
        if (given[i] < 0 && !dev_null) {
            dev_null = UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
            if (!dev_null) fail(errno, "spawn " + program + ": cannot open /dev/null");
        }
        stdio[i] = high_dup(given[i] >= 0 ? given[i] : dev_null.get(), "stdio " + std::to_string(i));
        plan.stdio[i] = stdio[i].get();
    }
    UniqueFd cwd;
    if (options.cwd_fd >= 0) {
        cwd = high_dup(options.cwd_fd, "the working directory");
    } else {
        cwd = UniqueFd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!cwd) fail(errno, "spawn " + program + ": cannot open /");
    }
    plan.cwd_fd = cwd.get();
    UniqueFd netns;
    if (options.netns_fd >= 0) netns = high_dup(options.netns_fd, "the network namespace");
    plan.netns_fd = netns.get();
    UniqueFd mount_namespace;
    if (options.mount_namespace_fd >= 0) mount_namespace = high_dup(options.mount_namespace_fd, "the mount namespace");
    plan.mount_namespace_fd = mount_namespace.get();
    plan.new_cgroup_namespace = options.new_cgroup_namespace;
    std::vector<CgroupMount> cgroup_mounts;
    if (options.new_cgroup_namespace) cgroup_mounts = netns::cgroup_mounts();
    for (const auto& mount : cgroup_mounts) plan.cgroup_mounts.emplace_back(mount.mount_point.c_str(), mount.flags);

    // Which targets exist is decided here: the child cannot build error messages or skip gracefully.
    std::vector<std::pair<const std::string*, const std::string*>> bind_names;
    for (const auto& bind : options.binds) {
        struct stat info {};
        if (::stat(bind.source.c_str(), &info) != 0) {
            fail(errno, "spawn " + program + ": bind source " + bind.source, "the file to bind-mount must exist");
        }
        for (const auto& target : bind.targets) {
            if (::stat(target.c_str(), &info) != 0) continue;
            plan.binds.emplace_back(bind.source.c_str(), target.c_str());
            bind_names.emplace_back(&bind.source, &target);
        }
    }
    std::vector<std::string> carry_dirs;
    if (!options.cwd_path.empty()) {
        struct stat info {};
        if (::fstat(plan.cwd_fd, &info) != 0) fail(errno, "spawn " + program + ": cannot stat the working directory");
        plan.cwd_path = options.cwd_path.c_str();
        plan.cwd_dev = info.st_dev;
        plan.cwd_ino = info.st_ino;
    }
    for (std::size_t i = 0; i < options.private_tmp.size(); ++i) {
        const std::string& tmp = options.private_tmp[i];
        plan.private_tmp.push_back(tmp.c_str());
        if (options.cwd_path == tmp) plan.cwd_is_tmp = true;
        if (options.cwd_path == tmp || !policy::path_within(options.cwd_path, tmp) || plan.carry_tmp >= 0) continue;
        plan.carry_tmp = static_cast<int>(i);
        for (std::size_t at = options.cwd_path.find('/', tmp.size() + 1);; at = options.cwd_path.find('/', at + 1)) {
            carry_dirs.push_back(options.cwd_path.substr(0, at));
            if (at == std::string::npos) break;
        }
    }
    for (const auto& directory : carry_dirs) plan.carry_dirs.push_back(directory.c_str());
    for (const auto& path : options.pins) plan.pins.push_back(path.c_str());
    for (const auto& path : options.protect) plan.protect.push_back(path.c_str());
    for (const auto& path : options.hide) plan.hidden.push_back(path.c_str());
    for (const auto& file : options.mask) plan.masked.push_back(file.c_str());
    plan.pid_namespace = options.pid_namespace;
    plan.proc_pids_only = options.proc_pids_only;
    if (options.landlock != nullptr) plan.landlock = plan_landlock(*options.landlock, options.landlock_abi);
    plan.seccomp = options.seccomp;
    plan.groups = options.groups.data();
    plan.group_count = options.groups.size();
    plan.uid = options.uid;
    plan.gid = options.gid;
    plan.cap_last = read_cap_last();

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail(errno, "spawn " + program + ": cannot create a pipe");
    UniqueFd error_read(pipe_fds[0]);
    UniqueFd error_write_low(pipe_fds[1]);
    UniqueFd error_write = high_dup(error_write_low.get(), "the error pipe");
    error_write_low.reset();
    plan.error_fd = error_write.get();

    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD | CLONE_NEWNS | (options.pid_namespace ? CLONE_NEWPID : 0);
    args.pidfd = reinterpret_cast<std::uintptr_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(options.cgroup_fd);

    // No signal handler of the daemon may run in the child before it resets them.
    sigset_t all;
    sigset_t old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) child_main(plan);
    const int clone_error = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
        std::string_view fix;
        if (clone_error == ENOSYS || clone_error == E2BIG) fix = "clone3 with CLONE_INTO_CGROUP needs Linux 5.7+";
        if (clone_error == EBUSY) {
            fix =
                "the cgroup enables controllers in cgroup.subtree_control, so it cannot hold processes; "
                "spawn into a leaf cgroup";
        }
        if (clone_error == EPERM || clone_error == EACCES) {
            fix = "tameflared needs root and write access to the cgroup's cgroup.procs";
        }
        fail(clone_error, "clone3 " + program + " into its cgroup", fix);
    }
    Process process(static_cast<pid_t>(pid), UniqueFd(pidfd));
    error_write.reset();

    ChildError report;
    ssize_t n = 0;
    do {
        n = ::read(error_read.get(), &report, sizeof report);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return process;  // the pipe closed at execve: it runs
    process.wait();              // it exited with 127; reap it
    if (n != static_cast<ssize_t>(sizeof report) || report.step < 0 ||
        report.step >= static_cast<int>(kStepNames.size())) {
        throw std::runtime_error("spawn " + program + ": the child died before execve without saying why");
    }
    const auto step = static_cast<Step>(report.step);
    if (step == Step::execve) fail(report.err, "execve " + program, step_hint(step, report.err));
    std::string what(kStepNames[static_cast<std::size_t>(report.step)]);
    if (step == Step::cgroupfs_read_only && report.detail >= 0 &&
        static_cast<std::size_t>(report.detail) < cgroup_mounts.size()) {
        what += " " + cgroup_mounts[static_cast<std::size_t>(report.detail)].mount_point.string();
    }
    if ((step == Step::bind_mount || step == Step::remount_read_only) && report.detail >= 0 &&
        static_cast<std::size_t>(report.detail) < bind_names.size()) {
        const auto& [source, target] = bind_names[static_cast<std::size_t>(report.detail)];
        what += " " + *source + " over " + *target;
    }
    const auto detail_of = [&](Step named, const std::vector<std::string>& list) {
        if (step == named && report.detail >= 0 && static_cast<std::size_t>(report.detail) < list.size()) {
            what += " " + list[static_cast<std::size_t>(report.detail)];
        }
    };
    detail_of(Step::mask_file, options.mask);
    detail_of(Step::hide_directory, options.hide);
    detail_of(Step::pin, options.pins);
    detail_of(Step::protect, options.protect);
    detail_of(Step::private_tmp, options.private_tmp);
    if ((step == Step::find_working_directory && report.err == EXDEV) ||
        (step == Step::fchdir && !options.cwd_path.empty())) {
        fail(report.err, "the working directory " + options.cwd_path + " of " + program,
             "the agent would not see it at that path: it is hidden from agents (filesystem.hide), or it is not the "
             "same directory in the caller's view; launch the agent from another directory");
    }
    if (step == Step::carry_working_directory || (step == Step::find_working_directory && !options.cwd_path.empty())) {
        what += " " + options.cwd_path;
    }
    if (step == Step::landlock && report.detail >= 0 &&
        static_cast<std::size_t>(report.detail) < plan.landlock.rules.size()) {
        what +=
            std::string(" (the rule for ") + plan.landlock.rules[static_cast<std::size_t>(report.detail)].first + ")";
    }
    fail(report.err, what + " for " + program, step_hint(step, report.err));
}

}  // namespace tameflare::netns
