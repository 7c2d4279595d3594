#include "daemon/ipc/channel.h"

#include "common/seqpacket.h"

#include <sys/socket.h>

#include <cerrno>
#include <system_error>

namespace tameflare::ipc {
namespace {

constexpr PacketLimits kLimits{kMaxFrame, kMaxFrameFds};
constexpr std::string_view kWhat = "the data plane channel";

}  // namespace

std::pair<Channel, Channel> Channel::pair() {
    int ends[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) {
        throw std::system_error(errno, std::generic_category(), "socketpair for the data plane channel");
    }
    return {Channel(UniqueFd(ends[0])), Channel(UniqueFd(ends[1]))};
}

void Channel::send(std::uint16_t type, std::uint32_t seq, std::string_view body, std::span<const int> fds,
                   bool dont_wait) const {
    Writer frame;
    frame.u16(type);
    frame.u32(seq);
    std::string bytes = frame.take();
    bytes.append(body);
    if (bytes.size() > kMaxFrame) {
        throw std::length_error("a frame of " + std::to_string(bytes.size()) + " bytes for the data plane channel");
    }
    send_packet(socket_.get(), bytes, fds, kLimits, kWhat, dont_wait ? MSG_DONTWAIT : 0);
}

std::optional<Frame> Channel::receive(bool dont_wait) const {
    auto packet = receive_packet(socket_.get(), kLimits, kWhat, dont_wait ? MSG_DONTWAIT : 0);
    if (!packet) return std::nullopt;
    Reader header(packet->bytes);
    Frame out;
    out.type = header.u16();
    out.seq = header.u32();
    out.body = packet->bytes.substr(kFrameHeader);
    out.fds = std::move(packet->fds);
    return out;
}

}  // namespace tameflare::ipc
