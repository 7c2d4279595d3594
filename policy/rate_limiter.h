// Sliding-window rate limit per key (gateway/agent): at most N requests in
// any window of W seconds. Time is passed in, so the logic is testable and the
// policy library reads no clock.
#pragma once

#include "policy/gateway.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tameflare::policy {

class RateLimiter {
public:
    using Clock = std::chrono::steady_clock;

    struct Result {
        bool allowed = true;
        std::chrono::seconds retry_after{0};  // when refused: until a slot frees (>= 1 s)
        std::uint32_t used = 0;               // requests in the window, this one included when allowed
    };

    // Counts the request when allowed; a refused request does not use a slot.
    Result acquire(std::string_view key, const RateLimit& limit, Clock::time_point now);
    // Drops keys idle for longer than `idle` (bounded memory for many agents).
    void purge(Clock::time_point now, std::chrono::seconds idle);
    [[nodiscard]] std::size_t keys() const;

private:
    struct Hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
    };
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::deque<Clock::time_point>, Hash, std::equal_to<>> windows_;
};

}  // namespace tameflare::policy
