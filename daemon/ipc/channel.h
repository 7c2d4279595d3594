// The channel between the supervisor and the data plane: one end of a unix
// SOCK_SEQPACKET socket pair, whole messages with descriptors attached
// (SCM_RIGHTS), in the shape of cilium's proxy starter. A frame is a u16
// message type and a u32 sequence number (the request a reply answers),
// then the message (daemon/ipc/messages.h). Both ends are the same build;
// the supervisor still treats every frame as hostile input (bounded sizes,
// checked encoding), since the data plane parses agents' traffic.
#pragma once

#include "common/unique_fd.h"
#include "daemon/ipc/codec.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::ipc {

// Past these a frame is refused. The kernel's own bound on one message is
// the socket's send buffer (net.core.wmem_default, 208 KiB on Debian).
inline constexpr std::size_t kMaxFrame = std::size_t{128} * 1024;
inline constexpr std::size_t kMaxFrameFds = 16;
inline constexpr std::size_t kFrameHeader = 6;

struct Frame {
    std::uint16_t type = 0;
    std::uint32_t seq = 0;
    std::string body;
    std::vector<UniqueFd> fds;
};

class Channel {
public:
    // A connected pair (close-on-exec): the supervisor keeps one end and
    // hands the other to the data plane.
    static std::pair<Channel, Channel> pair();

    explicit Channel(UniqueFd socket) : socket_(std::move(socket)) {}

    [[nodiscard]] int fd() const { return socket_.get(); }
    [[nodiscard]] bool open() const { return static_cast<bool>(socket_); }
    UniqueFd release() { return std::move(socket_); }

    // Sends a frame. Blocks while the peer's buffer is full unless
    // `dont_wait` (then throws std::system_error with EAGAIN). Throws
    // std::system_error (EPIPE: the peer is gone).
    void send(std::uint16_t type, std::uint32_t seq, std::string_view body, std::span<const int> fds = {},
              bool dont_wait = false) const;

    // The next frame; nullopt when the peer closed. With `dont_wait`,
    // throws std::system_error with EAGAIN when none is waiting. Throws
    // DecodeError for a frame too short to hold its header, and
    // std::runtime_error for one past kMaxFrame or kMaxFrameFds.
    std::optional<Frame> receive(bool dont_wait = false) const;

private:
    UniqueFd socket_;
};

}  // namespace tameflare::ipc
