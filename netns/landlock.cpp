#include "netns/landlock.h"

#include "common/unique_fd.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace tameflare::netns {
namespace {

// Debian 12's headers describe ABI 2; the later fields and bits are the
// kernel's stable ABI, spelled here.
struct RulesetAttr {
    std::uint64_t handled_access_fs = 0;
    std::uint64_t handled_access_net = 0;  // ABI 4
    std::uint64_t scoped = 0;              // ABI 6
};
constexpr std::uint64_t kScopeAbstractUnixSocket = 1ULL << 0;
constexpr std::uint64_t kScopeSignal = 1ULL << 1;
constexpr std::uint64_t kFsMakeBlock = 1ULL << 11;
constexpr std::uint64_t kNetBindTcp = 1ULL << 0;

// The filesystem rights each ABI knows: 1 has bits 0-12, 2 adds REFER (13),
// 3 TRUNCATE (14), 5 IOCTL_DEV (15).
std::uint64_t fs_rights(int abi) {
    if (abi <= 0) return 0;
    if (abi == 1) return (1ULL << 13) - 1;
    if (abi == 2) return (1ULL << 14) - 1;
    if (abi <= 4) return (1ULL << 15) - 1;
    return (1ULL << 16) - 1;
}

struct PathBeneathAttr {
    std::uint64_t allowed_access;
    std::int32_t parent_fd;
} __attribute__((packed));

}  // namespace

int landlock_abi() {
    const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi > 0 ? static_cast<int>(abi) : 0;
}

std::string landlock_missing_reason() {
    if (::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION) > 0) return {};
    switch (errno) {
        case ENOSYS: return "this kernel is built without Landlock (CONFIG_SECURITY_LANDLOCK)";
        case EOPNOTSUPP:
            return "Landlock is not enabled in this kernel: add landlock to the lsm= boot parameter "
                   "(cat /sys/kernel/security/lsm shows the active list)";
        case EPERM:
            return "a seccomp filter refuses the Landlock system calls (a container's, e.g. systemd-nspawn: "
                   "--system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self'; or "
                   "a SystemCallFilter= of tameflared's unit)";
        default: return std::string("landlock_create_ruleset: ") + std::strerror(errno);
    }
}

LandlockPlan plan_landlock(const LandlockPolicy& policy, int abi) {
    LandlockPlan plan;
    if (abi <= 0) return plan;
    plan.abi = abi;
    const std::uint64_t known = fs_rights(abi);
    plan.handled_fs = policy.handled_fs & known;
    if (abi >= kLandlockScopeAbi) {
        if (policy.scope_signals) plan.scoped |= kScopeSignal;
        if (policy.scope_abstract_unix) plan.scoped |= kScopeAbstractUnixSocket;
    }
    // Governed with no rule: no port at all.
    if (abi >= kLandlockNetAbi && policy.deny_tcp_bind) plan.handled_net = kNetBindTcp;
    for (const auto& rule : policy.paths) {
        const std::uint64_t access = rule.access & plan.handled_fs;
        if (access != 0) plan.rules.emplace_back(rule.path.c_str(), access);
    }
    // The domain always governs some file access, at least making block
    // devices (which an agent without CAP_MKNOD cannot do anyway): a ruleset
    // must govern something before ABI 6, and a domain that governs file
    // access also forbids mount, umount, pivot_root and move_mount, in any
    // user namespace the agent makes. Without that, a bind mount in an
    // agent's own user and mount namespace could put any socket at a path
    // its unix_sockets list allows.
    plan.handled_fs |= kFsMakeBlock;
    return plan;
}

int apply_landlock(const LandlockPlan& plan, int& failed_rule) noexcept {
    failed_rule = -1;
    if (plan.abi <= 0) return 0;
    RulesetAttr attr;
    attr.handled_access_fs = plan.handled_fs;
    attr.handled_access_net = plan.handled_net;
    attr.scoped = plan.scoped;
    // Older kernels take the shorter struct; they accept the longer one only when its extra fields are zero.
    const std::size_t size = plan.scoped != 0 || plan.handled_net != 0 ? sizeof attr : sizeof attr.handled_access_fs;
    const UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, size, 0U)));
    if (!ruleset) return errno;
    for (std::size_t i = 0; i < plan.rules.size(); ++i) {
        const UniqueFd beneath_fd(::open(plan.rules[i].first, O_PATH | O_CLOEXEC));
        if (!beneath_fd && (errno == ENOENT || errno == ENOTDIR || errno == EACCES || errno == ELOOP)) continue;
        // A file takes only the rights that apply to files (the kernel refuses the rest with EINVAL).
        std::uint64_t rights = plan.rules[i].second;
        struct stat what {};
        if (beneath_fd && ::fstat(beneath_fd.get(), &what) == 0 && !S_ISDIR(what.st_mode)) {
            rights &= kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate | kFsIoctlDev;
        }
        PathBeneathAttr beneath{rights, beneath_fd.get()};
        if (!beneath_fd ||
            ::syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH, &beneath, 0U) != 0) {
            failed_rule = static_cast<int>(i);
            return errno;
        }
    }
    if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0U) != 0) return errno;
    return 0;
}

}  // namespace tameflare::netns
