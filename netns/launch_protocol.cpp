#include "netns/launch_protocol.h"

#include "common/seqpacket.h"

namespace tameflare::netns {
namespace {

constexpr PacketLimits kLimits{kMaxLaunchMessage, kMaxLaunchFds};

}  // namespace

void send_message(int socket, const std::string& text, const std::vector<int>& fds) {
    send_packet(socket, text, fds, kLimits, "the launch socket");
}

std::optional<Message> receive_message(int socket) {
    auto packet = receive_packet(socket, kLimits, "the launch socket");
    if (!packet) return std::nullopt;
    return Message{std::move(packet->bytes), std::move(packet->fds)};
}

}  // namespace tameflare::netns
