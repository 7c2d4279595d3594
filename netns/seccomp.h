// The agent's seccomp filter: no new user namespaces. In a user namespace of
// its own an agent would hold CAP_SYS_CHROOT and CAP_SYS_ADMIN there: a
// chroot into a directory it writes, with a hard link of a socket outside at
// a path its unix_sockets list allows, would lead the filter (which compares
// the path as spelled) to that socket. The filter is built by libseccomp in
// the daemon and loaded by the agent's process before execve, where nothing
// may allocate.
#pragma once

#include <linux/filter.h>

#include <vector>

namespace tameflare::netns {

struct SeccompProgram {
    std::vector<sock_filter> instructions;
};

// unshare and clone with CLONE_NEWUSER fail with EPERM; clone3, whose flags a
// filter cannot read, fails with ENOSYS, so that libc falls back to clone.
// Applies to the native ABI and, on x86-64, to i386 and x32 system calls
// too. Throws std::runtime_error when libseccomp cannot build it.
SeccompProgram agent_seccomp_program();

// Whether this kernel has seccomp filters (CONFIG_SECCOMP_FILTER).
bool seccomp_available();

// Async-signal-safe: installs `program` on the calling thread (no_new_privs
// must be set). 0 or an errno.
int load_seccomp(const SeccompProgram& program) noexcept;

}  // namespace tameflare::netns
