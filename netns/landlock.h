// Landlock, the kernel's sandboxing LSM, for agents: which ABI the running
// kernel offers, and the domain an agent's process enters before execve.
//
// A process in a Landlock domain cannot ptrace (nor read /proc/PID/mem or
// /proc/PID/environ of) a process outside it (ABI 1); from ABI 6 it cannot
// signal a process outside it nor connect to an abstract unix socket made
// outside it. Filesystem rules (issue 21's `write` set) go into the same
// ruleset: `LandlockPolicy::paths`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tameflare::netns {

// The Landlock ABI version of the running kernel; 0 when Landlock is not
// built in or not enabled (absent from the `lsm=` boot list).
int landlock_abi();
// Why landlock_abi() is 0, and what to do ("" when it is not).
std::string landlock_missing_reason();

// ABI 6: scoping of signals and of abstract unix sockets.
constexpr int kLandlockScopeAbi = 6;

// ABI 4: TCP bind and connect rules.
constexpr int kLandlockNetAbi = 4;

// Filesystem rights (LANDLOCK_ACCESS_FS_*; Debian 12's header stops at ABI 2).
constexpr std::uint64_t kFsExecute = 1ULL << 0;
constexpr std::uint64_t kFsWriteFile = 1ULL << 1;
constexpr std::uint64_t kFsReadFile = 1ULL << 2;
constexpr std::uint64_t kFsReadDir = 1ULL << 3;
constexpr std::uint64_t kFsReadRights = kFsReadFile | kFsReadDir;
// Every right any ABI knows; plan_landlock keeps those of the running one.
constexpr std::uint64_t kFsAllRights = (1ULL << 16) - 1;
constexpr std::uint64_t kFsTruncate = 1ULL << 14;  // ABI 3
constexpr std::uint64_t kFsIoctlDev = 1ULL << 15;  // ABI 5
// Every right that changes the file system or a file, none that reads or
// executes: write, remove and make (each kind), refer, truncate, ioctl on
// devices. A rule grants what the ABI knows of them.
constexpr std::uint64_t kFsWriteRights =
    kFsWriteFile | (((1ULL << 13) - 1) & ~((1ULL << 4) - 1)) | (1ULL << 13) | kFsTruncate | kFsIoctlDev;

struct LandlockPolicy {
    // Access rights granted beneath a path (LANDLOCK_ACCESS_FS_* bits). With
    // no rule, file access is left to the kernel's permissions: the domain
    // exists for its ptrace, signal and socket scoping, and for the mount
    // ban that comes with governing any file access (plan_landlock). A path
    // that does not exist, or that the agent's uid cannot reach, when the
    // domain is made gives no rule (nothing to grant there).
    struct PathRule {
        std::string path;
        std::uint64_t access = 0;
    };
    std::vector<PathRule> paths;
    std::uint64_t handled_fs = 0;     // the rights the rules govern; 0 with no rule
    bool scope_signals = true;        // ABI 6+
    bool scope_abstract_unix = true;  // ABI 6+
    bool deny_tcp_bind = false;       // ABI 4+: no TCP port may be bound
};

// What the child process applies between clone and execve, where it must
// not allocate: made by the parent from a LandlockPolicy. The pointers point
// into the policy, which outlives the plan.
struct LandlockPlan {
    int abi = 0;  // 0: no domain
    std::uint64_t handled_fs = 0;
    std::uint64_t handled_net = 0;
    std::uint64_t scoped = 0;
    std::vector<std::pair<const char*, std::uint64_t>> rules;  // path, access
};

// The plan for `policy` on a kernel of `abi` (rights and scopes the ABI does
// not know are left out). abi 0 gives an empty plan.
LandlockPlan plan_landlock(const LandlockPolicy& policy, int abi);

// Async-signal-safe: creates the ruleset, adds the rules and restricts the
// calling thread (no_new_privs must be set). 0 on success, else an errno;
// `failed_rule` names the rule that failed (-1: not a rule).
int apply_landlock(const LandlockPlan& plan, int& failed_rule) noexcept;

}  // namespace tameflare::netns
