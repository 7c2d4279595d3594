#include "daemon/dataplane/link.h"

#include <sys/socket.h>

#include <future>
#include <system_error>
#include <vector>

namespace tameflare::dataplane {

Link::Link(ipc::Channel channel, MessageHandler on_message, std::function<void(const std::string&)> on_closed)
    : channel_(std::move(channel)), on_message_(std::move(on_message)), on_closed_(std::move(on_closed)) {}

Link::~Link() {
    stop();
}

void Link::stop() {
    shut_down();
    if (reader_.joinable()) reader_.join();
}

void Link::start() {
    reader_ = std::thread([this] { read(); });
}

void Link::shut_down() {
    if (channel_.open()) ::shutdown(channel_.fd(), SHUT_RDWR);
}

bool Link::send(std::uint16_t type, std::uint32_t seq, const std::string& body, std::span<const int> fds) {
    if (closed_.load()) return false;
    try {
        channel_.send(type, seq, body, fds);
        return true;
    } catch (const std::system_error&) {
        // The peer is gone; the reader sees the end and fails what waits.
        return false;
    }
}

void Link::request(std::uint16_t type, const std::string& body, ReplyHandler done) {
    std::uint32_t seq = 0;
    {
        std::lock_guard lock(mutex_);
        if (!closed_.load()) {
            next_seq_ = (next_seq_ + 1) & ~kReplyBit;
            if (next_seq_ == 0) next_seq_ = 1;
            seq = next_seq_;
            waiting_.emplace(seq, std::move(done));
        }
    }
    if (seq == 0) {
        // Closed: not sent, and `done` was not taken.
        done(std::nullopt);  // NOLINT(bugprone-use-after-move): moved only when seq != 0
        return;
    }
    if (!send(type, seq, body, {})) {
        ReplyHandler failed;
        {
            std::lock_guard lock(mutex_);
            if (const auto found = waiting_.find(seq); found != waiting_.end()) {
                failed = std::move(found->second);
                waiting_.erase(found);
            }
        }
        if (failed) failed(std::nullopt);
    }
}

std::optional<ipc::Frame> Link::call(std::uint16_t type, const std::string& body, std::chrono::milliseconds timeout) {
    auto promise = std::make_shared<std::promise<std::optional<ipc::Frame>>>();
    auto future = promise->get_future();
    request(type, body, [promise](std::optional<ipc::Frame> reply) { promise->set_value(std::move(reply)); });
    if (future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return future.get();
}

void Link::read() {
    std::string why = "the peer closed the channel";
    try {
        for (;;) {
            auto frame = channel_.receive();
            if (!frame) break;
            if ((frame->seq & kReplyBit) == 0) {
                on_message_(*frame);
                continue;
            }
            ReplyHandler done;
            {
                std::lock_guard lock(mutex_);
                const auto found = waiting_.find(frame->seq & ~kReplyBit);
                if (found == waiting_.end()) throw ipc::DecodeError("a reply to no request", 0);
                done = std::move(found->second);
                waiting_.erase(found);
            }
            done(std::move(*frame));
        }
    } catch (const std::exception& error) {
        why = error.what();
    }
    close(why);
}

void Link::close(const std::string& why) {
    std::map<std::uint32_t, ReplyHandler> failed;
    {
        std::lock_guard lock(mutex_);
        closed_.store(true);
        failed.swap(waiting_);
    }
    shut_down();
    for (auto& [seq, done] : failed) done(std::nullopt);
    if (on_closed_) on_closed_(why);
}

}  // namespace tameflare::dataplane
