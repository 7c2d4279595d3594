#include "common/seqpacket.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace tameflare {

void send_packet(int socket, std::string_view bytes, std::span<const int> fds, const PacketLimits& limits,
                 std::string_view what, int flags) {
    if (fds.size() > limits.max_fds) throw std::invalid_argument("too many descriptors for one message");
    iovec data{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        message.msg_control = control.data();
        message.msg_controllen = control.size();
        cmsghdr* header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    while (::sendmsg(socket, &message, MSG_NOSIGNAL | flags) < 0) {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "sending on " + std::string(what));
    }
}

std::optional<Packet> receive_packet(int socket, const PacketLimits& limits, std::string_view what, int flags) {
    std::string buffer(limits.max_bytes, '\0');
    iovec data{buffer.data(), buffer.size()};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    // Room for the limit, and no more: past it the kernel sets MSG_CTRUNC and closes the rest.
    std::vector<char> control(CMSG_SPACE(sizeof(int) * limits.max_fds));
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    ssize_t received = 0;
    while ((received = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC | flags)) < 0) {
        if (errno != EINTR) {
            throw std::system_error(errno, std::generic_category(), "receiving on " + std::string(what));
        }
    }
    Packet out;
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            out.fds.emplace_back(fd);  // owned from here on, even if the message is refused
        }
    }
    if ((message.msg_flags & MSG_CTRUNC) != 0) {
        throw std::runtime_error("more than " + std::to_string(limits.max_fds) + " descriptors in one message on " +
                                 std::string(what));
    }
    if ((message.msg_flags & MSG_TRUNC) != 0) {
        throw std::runtime_error("a message longer than " + std::to_string(limits.max_bytes) + " bytes on " +
                                 std::string(what));
    }
    if (received == 0 && out.fds.empty()) return std::nullopt;  // SOCK_SEQPACKET: end of file
    buffer.resize(static_cast<std::size_t>(received));
    out.bytes = std::move(buffer);
    return out;
}

}  // namespace tameflare
