// The data plane's confinement (issue 24): the process that parses what
// agents send holds nothing worth taking. Two steps, because the first needs
// root and the second must come after exec:
//
//   drop_privileges  in the supervisor's child between fork and exec: the
//                    data plane's own user with no supplementary group, every
//                    capability set empty (bounding and ambient included),
//                    root's special treatment off for good (securebits), and
//                    no_new_privs, so that nothing it executes gains any.
//   confine_self     in the data plane, before it reads a byte from the
//                    channel or starts a thread: not dumpable, a Landlock
//                    domain that reads only beneath the paths it must and
//                    binds no TCP port, and the seccomp allow-list of the
//                    system calls it makes (anything else fails with EPERM;
//                    new processes and foreign-ABI calls are impossible).
//
// Both are applied the same way to a probe process in tests/privileged
// (dataplane_confine_test.cpp), so the proof runs the real filter.
#pragma once

#include "common/error.h"

#include <sys/types.h>

#include <span>
#include <string>
#include <vector>

namespace tameflare::dataplane {

class ConfineError : public Error {
public:
    using Error::Error;
};

// Async-signal-safe (the supervisor has threads; the child of its fork may
// not allocate): 0, or the errno of the step that failed, whose name is put
// in `step`. Needs root (CAP_SETUID, CAP_SETGID, CAP_SETPCAP).
int drop_privileges(uid_t uid, gid_t gid, const char*& step) noexcept;

struct Confinement {
    // Where the data plane may read (files and directories beneath each);
    // a path that does not exist is skipped. Nothing may be written,
    // created or executed anywhere.
    std::vector<std::string> readable;
};

// What confine_self put in place.
struct Confined {
    int landlock_abi = 0;  // 0: this kernel has no Landlock (the rest still holds)
};

// Applies the Landlock domain and the seccomp filter to the calling
// process, which must not have started a thread yet. Throws ConfineError
// with what failed and how to fix it.
Confined confine_self(const Confinement& confinement);

// The system calls the data plane may make, by name (some only with
// certain arguments: confine.cpp). docs/security.md lists them.
std::span<const char* const> allowed_system_calls();

}  // namespace tameflare::dataplane
