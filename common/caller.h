// Who is calling, as the kernel says: SO_PEERCRED, SO_PEERGROUPS and
// SO_PEERPIDFD on a unix socket (the REST and launch sockets), the sender's
// credentials on D-Bus. The one description of a caller that every front
// end, the authorizer and the launcher use; never taken from a message.
#pragma once

#include "common/unique_fd.h"

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace tameflare {

struct Caller {
    pid_t pid = 0;
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    std::vector<gid_t> groups;  // supplementary groups
    // The calling process itself (a pidfd, Linux 5.3; from the socket on
    // 6.5), so that what is read about `pid` can be checked to be about that
    // process and not a later one that got its number. Shared by copies.
    std::shared_ptr<const UniqueFd> process;
    // The caller's cgroup ("/a/b" under the cgroup2 mount), checked to belong
    // to `pid` (pidfd); "" when it cannot be known, which counts as an agent.
    std::string cgroup;
    std::string via;     // "rest", "dbus", "launch"
    std::string method;  // what is called: "POST /v1/reload", "Reload"

    // The pidfd, -1 when there is none.
    [[nodiscard]] int pidfd() const noexcept { return process ? process->get() : -1; }
    // "uid:1000 pid:42 via rest (POST /v1/reload)", as audit records and
    // approvals name actors.
    [[nodiscard]] std::string describe() const;
};

// The peer of a connected unix socket. Throws std::system_error when the
// kernel gives no credentials.
Caller peer_credentials(int socket);

}  // namespace tameflare
