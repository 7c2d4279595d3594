#include "netns/launch_protocol.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace tameflare::netns {

void send_message(int socket, const std::string& text, const std::vector<int>& fds) {
    if (fds.size() > kMaxLaunchFds) throw std::invalid_argument("too many descriptors for one message");
    iovec data{const_cast<char*>(text.data()), text.size()};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxLaunchFds)] = {};
    if (!fds.empty()) {
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    while (::sendmsg(socket, &message, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "sending on the launch socket");
    }
}

std::optional<Message> receive_message(int socket) {
    std::string buffer(kMaxLaunchMessage, '\0');
    iovec data{buffer.data(), buffer.size()};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxLaunchFds)] = {};
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    ssize_t received = 0;
    while ((received = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC)) < 0) {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "receiving on the launch socket");
    }
    Message out;
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            out.fds.emplace_back(fd);  // owned from here on, even if we refuse the message
        }
    }
    if ((message.msg_flags & MSG_CTRUNC) != 0) throw std::runtime_error("too many descriptors in one message");
    if ((message.msg_flags & MSG_TRUNC) != 0) {
        throw std::runtime_error("message longer than " + std::to_string(kMaxLaunchMessage) + " bytes");
    }
    if (received == 0 && out.fds.empty()) return std::nullopt;  // SOCK_SEQPACKET: end of file
    buffer.resize(static_cast<std::size_t>(received));
    out.text = std::move(buffer);
    return out;
}

}  // namespace tameflare::netns
