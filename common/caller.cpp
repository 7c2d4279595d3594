#include "common/caller.h"

#include <sys/socket.h>

#include <cerrno>
#include <system_error>

namespace tameflare {

std::string Caller::describe() const {
    std::string text = "uid:" + std::to_string(uid) + " pid:" + std::to_string(pid);
    if (!via.empty()) text += " via " + via;
    if (!method.empty()) text += " (" + method + ")";
    return text;
}

Caller peer_credentials(int socket) {
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
        throw std::system_error(errno, std::generic_category(), "SO_PEERCRED");
    }
    Caller out;
    out.pid = credentials.pid;
    out.uid = credentials.uid;
    out.gid = credentials.gid;
    std::vector<gid_t> groups(64);
    length = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) != 0 && errno == ERANGE) {
        groups.resize(length / sizeof(gid_t));
        if (::getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) != 0) {
            throw std::system_error(errno, std::generic_category(), "SO_PEERGROUPS");
        }
    }
    groups.resize(length / sizeof(gid_t));
    out.groups = std::move(groups);
    constexpr int kSoPeerPidfd = 77;  // SO_PEERPIDFD, not in glibc 2.36's headers
    int pidfd = -1;
    length = sizeof pidfd;
    if (::getsockopt(socket, SOL_SOCKET, kSoPeerPidfd, &pidfd, &length) == 0 && pidfd >= 0) {
        out.process = std::make_shared<const UniqueFd>(pidfd);
    }
    return out;
}

}  // namespace tameflare
