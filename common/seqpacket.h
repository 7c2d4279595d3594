// One message at a time over a unix SOCK_SEQPACKET socket, with descriptors
// attached (SCM_RIGHTS): the launch socket's conversation with `tf run`
// (netns/launch_protocol.h) and the channel between the supervisor and the
// data plane (daemon/ipc/channel.h). Received descriptors are owned at once
// (close-on-exec), even when the message is then refused.
#pragma once

#include "common/unique_fd.h"

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare {

struct Packet {
    std::string bytes;
    std::vector<UniqueFd> fds;
};

struct PacketLimits {
    std::size_t max_bytes = 0;  // a longer message is refused (MSG_TRUNC)
    std::size_t max_fds = 0;    // more descriptors are refused (MSG_CTRUNC) and closed
};

// Sends one message with `fds` attached; `flags` adds to MSG_NOSIGNAL (e.g.
// MSG_DONTWAIT). Throws std::system_error (EAGAIN: would block; EMSGSIZE:
// longer than the socket's buffer), and std::invalid_argument for more
// descriptors than the limit. The length is the receiver's to refuse.
// `what` names the socket in errors.
void send_packet(int socket, std::string_view bytes, std::span<const int> fds, const PacketLimits& limits,
                 std::string_view what, int flags = 0);

// Receives one message; nullopt when the peer closed. Throws
// std::system_error (EAGAIN: nothing to read on a non-blocking call), and
// std::runtime_error for a message or descriptor list past the limits.
std::optional<Packet> receive_packet(int socket, const PacketLimits& limits, std::string_view what, int flags = 0);

}  // namespace tameflare
