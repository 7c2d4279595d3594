#include "policy/rate_limiter.h"

#include <algorithm>

namespace tameflare::policy {

RateLimiter::Result RateLimiter::acquire(std::string_view key, const RateLimit& limit, Clock::time_point now) {
    if (limit.requests == 0) return Result{};
    const std::lock_guard lock(mutex_);
    auto it = windows_.find(key);
    if (it == windows_.end()) it = windows_.emplace(std::string(key), std::deque<Clock::time_point>{}).first;
    auto& times = it->second;
    while (!times.empty() && times.front() <= now - limit.window) times.pop_front();
    if (times.size() >= limit.requests) {
        const auto wait = times.front() + limit.window - now;
        const auto seconds = std::chrono::ceil<std::chrono::seconds>(wait);
        return Result{false, std::max(seconds, std::chrono::seconds(1)), static_cast<std::uint32_t>(times.size())};
    }
    times.push_back(now);
    return Result{true, std::chrono::seconds(0), static_cast<std::uint32_t>(times.size())};
}

void RateLimiter::purge(Clock::time_point now, std::chrono::seconds idle) {
    const std::lock_guard lock(mutex_);
    std::erase_if(windows_,
                  [&](const auto& entry) { return entry.second.empty() || entry.second.back() <= now - idle; });
}

std::size_t RateLimiter::keys() const {
    const std::lock_guard lock(mutex_);
    return windows_.size();
}

}  // namespace tameflare::policy
