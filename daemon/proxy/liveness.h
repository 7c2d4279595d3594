// Whether event loops still run: the watchdog (sd_notify WATCHDOG=1) is fed
// only when every loop of the daemon has run a posted handler in time, so a
// loop stuck in a system call or a livelock makes systemd restart the service.
#pragma once

#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>

namespace tameflare::proxy {

inline bool loops_answer(std::span<boost::asio::io_context* const> loops, std::chrono::milliseconds timeout) {
    struct Pending {
        std::mutex mutex;
        std::condition_variable answered;
        std::size_t left = 0;
    };
    auto pending = std::make_shared<Pending>();
    pending->left = loops.size();
    for (auto* loop : loops) {
        boost::asio::post(*loop, [pending] {
            const std::lock_guard lock(pending->mutex);
            --pending->left;
            pending->answered.notify_all();
        });
    }
    std::unique_lock lock(pending->mutex);
    return pending->answered.wait_for(lock, timeout, [&pending] { return pending->left == 0; });
}

}  // namespace tameflare::proxy
