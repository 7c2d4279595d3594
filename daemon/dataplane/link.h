// One end of the data plane channel as requests, replies and messages, for
// either process (issue 24). A reader thread takes every frame: a reply goes
// to the callback of the request it answers (the sequence number, with the
// reply bit), anything else to `on_message`. Sending is safe from any thread
// (one sendmsg per frame). When the channel closes, or a frame cannot be
// read, every request still waiting gets nullopt and `on_closed` runs once:
// the caller fails closed.
#pragma once

#include "daemon/ipc/channel.h"
#include "daemon/ipc/messages.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

namespace tameflare::dataplane {

inline constexpr std::uint32_t kReplyBit = 0x80000000U;

class Link {
public:
    // The frame is the handler's to take descriptors from.
    using MessageHandler = std::function<void(ipc::Frame& frame)>;
    using ReplyHandler = std::function<void(std::optional<ipc::Frame> reply)>;

    Link(ipc::Channel channel, MessageHandler on_message, std::function<void(const std::string& why)> on_closed);
    // Shuts the channel down and joins the reader.
    ~Link();
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    void start();
    // Closes the channel (both directions); the reader ends as for the peer's close.
    void shut_down();
    // shut_down(), then waits for the reader to end (never from `on_message`).
    void stop();
    [[nodiscard]] bool closed() const { return closed_.load(); }

    // A message that wants no reply. False when the channel is closed.
    template <typename Message>
    bool post(const Message& message, std::span<const int> fds = {}) {
        return send(static_cast<std::uint16_t>(Message::kType), 0, ipc::encode(message), fds);
    }
    // The reply to the message with sequence number `seq`.
    template <typename Message>
    bool reply(std::uint32_t seq, const Message& message) {
        return send(static_cast<std::uint16_t>(Message::kType), seq | kReplyBit, ipc::encode(message), {});
    }
    // A request: `done` gets the reply, or nullopt when the channel closes first.
    template <typename Message>
    void request(const Message& message, ReplyHandler done) {
        request(static_cast<std::uint16_t>(Message::kType), ipc::encode(message), std::move(done));
    }
    // The same, waiting for the reply at most `timeout` (nullopt when none
    // came). Never from `on_message`: the reply comes on the same thread.
    template <typename Message>
    std::optional<ipc::Frame> call(const Message& message, std::chrono::milliseconds timeout) {
        return call(static_cast<std::uint16_t>(Message::kType), ipc::encode(message), timeout);
    }

private:
    bool send(std::uint16_t type, std::uint32_t seq, const std::string& body, std::span<const int> fds);
    void request(std::uint16_t type, const std::string& body, ReplyHandler done);
    std::optional<ipc::Frame> call(std::uint16_t type, const std::string& body, std::chrono::milliseconds timeout);
    void read();
    void close(const std::string& why);

    ipc::Channel channel_;
    MessageHandler on_message_;
    std::function<void(const std::string&)> on_closed_;
    std::atomic<bool> closed_{false};
    std::mutex mutex_;
    std::uint32_t next_seq_ = 0;                     // under mutex_
    std::map<std::uint32_t, ReplyHandler> waiting_;  // under mutex_
    std::thread reader_;
};

}  // namespace tameflare::dataplane
