// Sliding-window rate limiting per key, with explicit time points: no clock is
// read, so nothing here depends on how fast the test runs.
#include "policy/rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::policy {
namespace {

using Clock = RateLimiter::Clock;
using std::chrono::seconds;

// A fixed origin far from the clock's epoch, plus `s` seconds.
Clock::time_point at(double s) {
    const Clock::time_point origin{std::chrono::hours(1000)};
    return origin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

RateLimit limit(std::uint32_t requests, int window_seconds) {
    RateLimit out;
    out.requests = requests;
    out.window = seconds(window_seconds);
    return out;
}

TEST(RateLimiter, AllowsNRequestsThenRefuses) {
    RateLimiter limiter;
    const RateLimit three = limit(3, 60);
    for (std::uint32_t i = 1; i <= 3; ++i) {
        const auto result = limiter.acquire("gw/agent", three, at(0));
        EXPECT_TRUE(result.allowed) << i;
        EXPECT_EQ(result.used, i);
        EXPECT_EQ(result.retry_after, seconds(0));
    }
    const auto refused = limiter.acquire("gw/agent", three, at(0));
    EXPECT_FALSE(refused.allowed);
    EXPECT_EQ(refused.used, 3u);
    EXPECT_EQ(refused.retry_after, seconds(60));
}

TEST(RateLimiter, ARefusedRequestDoesNotUseASlot) {
    RateLimiter limiter;
    const RateLimit two = limit(2, 10);
    EXPECT_TRUE(limiter.acquire("k", two, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire("k", two, at(1)).allowed);
    for (int t = 2; t < 10; ++t) EXPECT_FALSE(limiter.acquire("k", two, at(t)).allowed) << t;
    // Had the refusals counted, the window would still be full at t=10.
    const auto freed = limiter.acquire("k", two, at(10));
    EXPECT_TRUE(freed.allowed);
    EXPECT_EQ(freed.used, 2u);
}

TEST(RateLimiter, TheWindowSlidesInsteadOfResetting) {
    RateLimiter limiter;
    const RateLimit sixty = limit(60, 60);
    for (int t = 0; t < 60; ++t) ASSERT_TRUE(limiter.acquire("k", sixty, at(t)).allowed) << t;
    EXPECT_FALSE(limiter.acquire("k", sixty, at(59.5)).allowed);
    // At 60.5 the request made at 0 has left the window: exactly one slot is free.
    const auto first = limiter.acquire("k", sixty, at(60.5));
    EXPECT_TRUE(first.allowed);
    EXPECT_EQ(first.used, 60u);
    const auto second = limiter.acquire("k", sixty, at(60.5));
    EXPECT_FALSE(second.allowed);               // a fixed window would have reset to 60 free slots
    EXPECT_EQ(second.retry_after, seconds(1));  // the request at 1 leaves at 61
    EXPECT_TRUE(limiter.acquire("k", sixty, at(61)).allowed);
    EXPECT_FALSE(limiter.acquire("k", sixty, at(61)).allowed);
}

TEST(RateLimiter, ARequestLeavesTheWindowExactlyAWindowLater) {
    RateLimiter limiter;
    const RateLimit one = limit(1, 60);
    EXPECT_TRUE(limiter.acquire("k", one, at(0)).allowed);
    EXPECT_FALSE(limiter.acquire("k", one, at(59.999)).allowed);
    EXPECT_TRUE(limiter.acquire("k", one, at(60)).allowed);
}

TEST(RateLimiter, RetryAfterIsTheWaitRoundedUp) {
    RateLimiter limiter;
    const RateLimit one = limit(1, 60);
    ASSERT_TRUE(limiter.acquire("k", one, at(0)).allowed);
    EXPECT_EQ(limiter.acquire("k", one, at(0)).retry_after, seconds(60));
    EXPECT_EQ(limiter.acquire("k", one, at(0.001)).retry_after, seconds(60));  // 59.999 s -> 60
    EXPECT_EQ(limiter.acquire("k", one, at(30)).retry_after, seconds(30));
    EXPECT_EQ(limiter.acquire("k", one, at(30.2)).retry_after, seconds(30));  // 29.8 s -> 30
    EXPECT_EQ(limiter.acquire("k", one, at(58.5)).retry_after, seconds(2));   // 1.5 s -> 2
}

TEST(RateLimiter, RetryAfterIsAtLeastOneSecond) {
    RateLimiter limiter;
    const RateLimit one = limit(1, 60);
    ASSERT_TRUE(limiter.acquire("k", one, at(0)).allowed);
    const auto result = limiter.acquire("k", one, at(59.9999));
    EXPECT_FALSE(result.allowed);
    EXPECT_EQ(result.retry_after, seconds(1));
}

TEST(RateLimiter, RetryAfterCountsFromTheOldestRequest) {
    RateLimiter limiter;
    const RateLimit three = limit(3, 10);
    ASSERT_TRUE(limiter.acquire("k", three, at(0)).allowed);
    ASSERT_TRUE(limiter.acquire("k", three, at(4)).allowed);
    ASSERT_TRUE(limiter.acquire("k", three, at(8)).allowed);
    EXPECT_EQ(limiter.acquire("k", three, at(9)).retry_after, seconds(1));  // 0 leaves at 10
    EXPECT_TRUE(limiter.acquire("k", three, at(10)).allowed);
    EXPECT_EQ(limiter.acquire("k", three, at(11)).retry_after, seconds(3));  // 4 leaves at 14
}

TEST(RateLimiter, SeparateKeysAreIndependent) {
    RateLimiter limiter;
    const RateLimit one = limit(1, 60);
    EXPECT_TRUE(limiter.acquire("ci/agent-1", one, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire("ci/agent-2", one, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire("dev-bot/agent-1", one, at(0)).allowed);
    EXPECT_FALSE(limiter.acquire("ci/agent-1", one, at(1)).allowed);
    EXPECT_FALSE(limiter.acquire("ci/agent-2", one, at(1)).allowed);
    EXPECT_TRUE(limiter.acquire("ci/agent-3", one, at(1)).allowed);
    EXPECT_EQ(limiter.keys(), 4u);
}

TEST(RateLimiter, KeysAreComparedWhole) {
    RateLimiter limiter;
    const RateLimit one = limit(1, 60);
    EXPECT_TRUE(limiter.acquire("ab", one, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire("a", one, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire(std::string("a\0b", 3), one, at(0)).allowed);
    EXPECT_TRUE(limiter.acquire("", one, at(0)).allowed);
    EXPECT_FALSE(limiter.acquire("ab", one, at(0)).allowed);
}

TEST(RateLimiter, ZeroRequestsMeansUnlimited) {
    RateLimiter limiter;
    const RateLimit unlimited = limit(0, 60);
    for (int i = 0; i < 10000; ++i) {
        const auto result = limiter.acquire("k", unlimited, at(0));
        ASSERT_TRUE(result.allowed) << i;
        ASSERT_EQ(result.retry_after, seconds(0));
    }
}

TEST(RateLimiter, PurgeDropsIdleKeysAndKeepsActiveOnes) {
    RateLimiter limiter;
    const RateLimit five = limit(5, 60);
    ASSERT_TRUE(limiter.acquire("idle", five, at(0)).allowed);
    ASSERT_TRUE(limiter.acquire("active", five, at(0)).allowed);
    ASSERT_TRUE(limiter.acquire("active", five, at(100)).allowed);
    ASSERT_EQ(limiter.keys(), 2u);
    limiter.purge(at(130), seconds(60));  // "idle" last seen 130 s ago, "active" 30 s ago
    EXPECT_EQ(limiter.keys(), 1u);
    // "active" keeps its count: 1 request in the window at 130 (100), plus these.
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(limiter.acquire("active", five, at(130)).allowed) << i;
    EXPECT_FALSE(limiter.acquire("active", five, at(130)).allowed);
    // "idle" starts afresh.
    EXPECT_EQ(limiter.acquire("idle", five, at(130)).used, 1u);
    EXPECT_EQ(limiter.keys(), 2u);
}

TEST(RateLimiter, PurgeKeepsAFullWindowOfAnActiveKey) {
    RateLimiter limiter;
    const RateLimit two = limit(2, 60);
    ASSERT_TRUE(limiter.acquire("k", two, at(30)).allowed);
    ASSERT_TRUE(limiter.acquire("k", two, at(50)).allowed);
    limiter.purge(at(70), seconds(60));  // last request 20 s ago
    EXPECT_EQ(limiter.keys(), 1u);
    EXPECT_FALSE(limiter.acquire("k", two, at(70)).allowed) << "the requests at 30 and 50 still count";
    EXPECT_TRUE(limiter.acquire("k", two, at(90)).allowed);
}

TEST(RateLimiter, PurgeOfNothingIsHarmless) {
    RateLimiter limiter;
    limiter.purge(at(0), seconds(60));
    EXPECT_EQ(limiter.keys(), 0u);
}

TEST(RateLimiter, ConcurrentAcquiresOnOneKeyAllowExactlyTheLimit) {
    RateLimiter limiter;
    const RateLimit hundred = limit(100, 60);
    std::atomic<int> allowed{0};
    std::atomic<int> refused{0};
    std::atomic<std::uint32_t> most_used{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; ++i) {
                const auto result = limiter.acquire("shared", hundred, at(1));
                (result.allowed ? allowed : refused).fetch_add(1, std::memory_order_relaxed);
                std::uint32_t seen = most_used.load();
                while (result.used > seen && !most_used.compare_exchange_weak(seen, result.used)) {
                }
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(allowed.load(), 100);
    EXPECT_EQ(refused.load(), 4 * 1000 - 100);
    EXPECT_EQ(most_used.load(), 100u);
    EXPECT_EQ(limiter.keys(), 1u);
}

TEST(RateLimiter, ConcurrentAcquiresOnSeparateKeysDoNotInterfere) {
    RateLimiter limiter;
    const RateLimit ten = limit(10, 60);
    std::vector<int> allowed(8, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            const std::string key = "agent-" + std::to_string(t);
            for (int i = 0; i < 100; ++i) {
                if (limiter.acquire(key, ten, at(0)).allowed) ++allowed[static_cast<std::size_t>(t)];
            }
        });
    }
    for (auto& thread : threads) thread.join();
    for (int t = 0; t < 8; ++t) EXPECT_EQ(allowed[static_cast<std::size_t>(t)], 10) << t;
    EXPECT_EQ(limiter.keys(), 8u);
}

}  // namespace
}  // namespace tameflare::policy
