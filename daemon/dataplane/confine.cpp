#include "daemon/dataplane/confine.h"

#include "netns/landlock.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace tameflare::dataplane {
namespace {

// Every call the proxy and the DNS stubs make once running (Asio's epoll
// reactor, OpenSSL, the resolver, the allocator, threads), found with strace
// over the proxy and DNS suites; those with arguments worth checking get
// their own rules below and are not in this list.
constexpr const char* kAllowed[] = {
    // descriptors and files (Landlock decides which files)
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "close",
    "lseek",
    "fstat",
    "newfstatat",
    "statx",
    "openat",
    "getdents64",
    "fcntl",
    "dup",
    "dup3",
    "pipe2",
    // memory
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    // threads and signals
    "futex",
    "set_robust_list",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "exit",
    "exit_group",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    "gettid",
    "set_tid_address",
    // time, identity, randomness
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "getpid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getrandom",
    "uname",
    "sysinfo",
    "prlimit64",
    // the event loop
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "poll",
    "ppoll",
    "pselect6",
    // sockets it was given or opens to upstreams (never bind or listen: the supervisor made every listener)
    "connect",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
};

// The calls allowed only with some arguments, for the documentation's list.
constexpr const char* kConditional[] = {"socket", "clone", "ioctl", "prctl", "bpf", "tgkill"};

struct ContextDeleter {
    void operator()(void* context) const { seccomp_release(context); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

[[noreturn]] void seccomp_failed(const std::string& what, int result) {
    throw ConfineError("cannot build the data plane's seccomp filter: " + what + ": " + std::strerror(-result),
                       "libseccomp2 and the kernel's CONFIG_SECCOMP_FILTER are needed (tf doctor checks them)");
}

void check(int result, const std::string& what) {
    if (result < 0) seccomp_failed(what, result);
}

void allow_with(void* context, int call, const char* name, std::initializer_list<scmp_datum_t> values, int arg) {
    for (const auto value : values) {
        const scmp_arg_cmp compare{static_cast<unsigned>(arg), SCMP_CMP_EQ, value, 0};
        check(seccomp_rule_add_array(context, SCMP_ACT_ALLOW, call, 1, &compare), name);
    }
}

void load_seccomp() {
    const Context context(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
    if (!context) throw ConfineError("cannot build the data plane's seccomp filter: seccomp_init failed");
    // A call of another ABI (i386, x32) ends the process: the allow-list names native calls only.
    check(seccomp_attr_set(context.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "the action for other ABIs");
    for (const char* name : kAllowed) {
        const int call = seccomp_syscall_resolve_name(name);
        if (call == __NR_SCMP_ERROR) continue;  // not a call of this architecture
        check(seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, call, 0), name);
    }
    // Sockets of the families it speaks: IPv4 and IPv6 upstreams, unix (the
    // channel's kind), netlink (the resolver's interface query).
    allow_with(context.get(), SCMP_SYS(socket), "socket", {AF_INET, AF_INET6, AF_UNIX, AF_NETLINK}, 0);
    // Threads, never processes: clone only with CLONE_THREAD; clone3, whose
    // flags a filter cannot read, says ENOSYS so that libc falls back to clone.
    constexpr auto kThread = static_cast<scmp_datum_t>(CLONE_THREAD);
    check(seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, kThread, kThread)),
          "clone");
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "clone3");
    allow_with(context.get(), SCMP_SYS(ioctl), "ioctl", {FIONREAD, FIONBIO, TCGETS}, 1);
    allow_with(context.get(), SCMP_SYS(prctl), "prctl", {PR_SET_NAME, PR_GET_NAME}, 0);
    // Looking up the origin map through the descriptor the supervisor passed; nothing else of BPF.
    allow_with(context.get(), SCMP_SYS(bpf), "bpf", {BPF_MAP_LOOKUP_ELEM}, 0);
    // abort() signals itself; no other process.
    allow_with(context.get(), SCMP_SYS(tgkill), "tgkill", {static_cast<scmp_datum_t>(::getpid())}, 0);
    check(seccomp_load(context.get()), "load");
}

}  // namespace

int drop_privileges(uid_t uid, gid_t gid, const char*& step) noexcept {
    // Root keeps no special power through setuid or exec, for good.
    step = "securebits";
    if (::prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED, 0, 0, 0) != 0) {
        return errno;
    }
    step = "the bounding set";
    for (int cap = 0; cap <= 63; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return errno;
    }
    step = "the ambient set";
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return errno;
    // Raw system calls: after fork in a process with threads, libc's
    // set*id would try to reach threads the child does not have.
    step = "setgroups";
    if (::syscall(SYS_setgroups, 0, nullptr) != 0) return errno;
    step = "setresgid";
    if (::syscall(SYS_setresgid, gid, gid, gid) != 0) return errno;
    step = "setresuid";
    if (::syscall(SYS_setresuid, uid, uid, uid) != 0) return errno;
    // setresuid away from root emptied the permitted and effective sets; the inheritable one too.
    step = "capset";
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capset, &header, data) != 0) return errno;
    step = "no_new_privs";
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
    // Checked, not assumed: a uid of 0 here would undo all of the above.
    step = "the uid check";
    uid_t real = 0;
    uid_t effective = 0;
    uid_t saved = 0;
    if (::getresuid(&real, &effective, &saved) != 0) return errno;
    if (real != uid || effective != uid || saved != uid || uid == 0) return EPERM;
    step = "";
    return 0;
}

Confined confine_self(const Confinement& confinement) {
    // Other processes of its user may not ptrace it or read its memory.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        throw ConfineError(std::string("prctl: ") + std::strerror(errno));
    }
    Confined out;
    out.landlock_abi = netns::landlock_abi();
    netns::LandlockPolicy policy;
    policy.handled_fs = netns::kFsAllRights;
    for (const auto& path : confinement.readable) policy.paths.push_back({path, netns::kFsReadRights});
    policy.deny_tcp_bind = true;
    const auto plan = netns::plan_landlock(policy, out.landlock_abi);
    int failed_rule = -1;
    if (const int error = netns::apply_landlock(plan, failed_rule); error != 0) {
        throw ConfineError("cannot enter the data plane's Landlock domain" +
                               (failed_rule >= 0 ? " (at " + confinement.readable.at(failed_rule) + ")" : "") + ": " +
                               std::strerror(error),
                           "tf doctor shows whether this kernel's Landlock works");
    }
    load_seccomp();
    return out;
}

std::span<const char* const> allowed_system_calls() {
    static const std::vector<const char*> all = [] {
        std::vector<const char*> out(std::begin(kAllowed), std::end(kAllowed));
        out.insert(out.end(), std::begin(kConditional), std::end(kConditional));
        return out;
    }();
    return all;
}

}  // namespace tameflare::dataplane
