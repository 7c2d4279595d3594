// The messages between the supervisor and the data plane, each a struct with
// its encoding next to it (daemon/ipc/codec.h). docs/architecture.md,
// "Privilege separation", lists them by direction.
#pragma once

#include "daemon/ipc/channel.h"
#include "daemon/ipc/codec.h"

#include <cstdint>
#include <span>
#include <string>

namespace tameflare::ipc {

// Bumped with any change to a message's encoding: the data plane the
// supervisor starts is the same build, so a mismatch means a stale binary.
inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::size_t kMaxName = 255;

enum class Type : std::uint16_t {
    hello = 1,  // data plane -> supervisor, first: who it is
    ping = 2,   // supervisor -> data plane: the watchdog's question
    pong = 3,   // data plane -> supervisor: its answer, with the same nonce
};

struct Hello {
    static constexpr Type kType = Type::hello;
    std::uint32_t protocol = kProtocolVersion;
    std::uint32_t pid = 0;
    std::string build;  // TF_VERSION

    void write(Writer& out) const {
        out.u32(protocol);
        out.u32(pid);
        out.text(build);
    }
    static Hello read(Reader& in) {
        Hello out;
        out.protocol = in.u32();
        out.pid = in.u32();
        out.build = in.text(kMaxName);
        return out;
    }
};

struct Ping {
    static constexpr Type kType = Type::ping;
    std::uint64_t nonce = 0;

    void write(Writer& out) const { out.u64(nonce); }
    static Ping read(Reader& in) { return Ping{in.u64()}; }
};

struct Pong {
    static constexpr Type kType = Type::pong;
    std::uint64_t nonce = 0;

    void write(Writer& out) const { out.u64(nonce); }
    static Pong read(Reader& in) { return Pong{in.u64()}; }
};

template <typename Message>
std::string encode(const Message& message) {
    Writer out;
    message.write(out);
    return out.take();
}

// The frame as `Message`; throws DecodeError when it is another type, or
// is not exactly one well-formed `Message`.
template <typename Message>
Message decode(const Frame& frame) {
    if (frame.type != static_cast<std::uint16_t>(Message::kType)) {
        throw DecodeError("a frame of type " + std::to_string(frame.type) + " where " +
                              std::to_string(static_cast<unsigned>(Message::kType)) + " was expected",
                          0);
    }
    Reader in(frame.body);
    auto message = Message::read(in);
    in.finish();
    return message;
}

template <typename Message>
void send(const Channel& channel, const Message& message, std::uint32_t seq = 0, std::span<const int> fds = {}) {
    channel.send(static_cast<std::uint16_t>(Message::kType), seq, encode(message), fds);
}

}  // namespace tameflare::ipc
