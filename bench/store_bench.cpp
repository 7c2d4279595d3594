// The store's writer with the proxy's request pattern, on this machine's disk.
//
//   Fsync4K                     baseline: write 4 KiB and fdatasync, in the same
//                               directory (the least any durable write costs)
//   CommitLatency/<sync>        one forwarded request's commit (traffic row and
//                               action.allowed event) on an idle store: p50/p99
//                               of commit() -> done
//   CommitLatencyUnderLoad/<sync>/<rate>
//                               the same, while 4 threads drive the sustained
//                               pattern below at <rate> requests/s
//   Sustained/<sync>            4 producer threads, each keeping up to 512
//                               requests in flight; a request is the proxy's
//                               pattern: commit() before the forward, record()
//                               when it ends (2 traffic writes, 2 audit records).
//                               requests_per_second = completed requests/s,
//                               records_per_second = rows written/s (4 per request)
//
// <sync> is 1 for synchronous=FULL (fsync per group commit, the default) and
// 0 for NORMAL (survives a crash of the daemon, not of the machine).
#include "daemon/store/store.h"
#include "tests/support/temp_dir.h"

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace tameflare::store;
using tameflare::testing::TempDir;
using Steady = std::chrono::steady_clock;

TrafficRow request_row(std::uint64_t n) {
    TrafficRow row;
    row.time = Clock::now();
    row.request_id = "b43754fa3b3edaf3" + std::to_string(1000000000000ULL + n);
    row.gateway = "ci";
    row.agent = "agent-7f3c";
    row.connector = "github";
    row.action = "github.pr.merge";
    row.method = "PUT";
    row.host = "api.github.com";
    row.path = "/repos/acme/widgets/pulls/1234/merge";
    row.decision = "allowed";
    row.reason = "permissions: github.pr.merge allow";
    row.forwarded = true;
    return row;
}

AuditEvent event(const TrafficRow& row, const char* name) {
    return AuditEvent{
        Clock::now(),
        name,
        row.gateway,
        row.agent,
        "agent:" + row.agent,
        row.request_id,
        R"({"action":"github.pr.merge","connector":"github","decision":"allowed","host":"api.github.com",)"
        R"("method":"PUT","path":"/repos/acme/widgets/pulls/1234/merge","reason":"permissions"})"};
}

std::unique_ptr<Store> open_store(const TempDir& dir, bool full) {
    StoreOptions options;
    options.database = dir.path() / "bench.db";
    options.sync = full ? Database::Sync::full : Database::Sync::normal;
    options.checkpoint_key = tameflare::vault::VaultKey::generate();
    options.max_queue = 1 << 20;
    return Store::open(options);
}

void percentiles(benchmark::State& state, std::vector<double>& micros) {
    if (micros.empty()) return;
    std::sort(micros.begin(), micros.end());
    state.counters["p50_us"] = micros[micros.size() / 2];
    state.counters["p99_us"] = micros[std::min(micros.size() - 1, micros.size() * 99 / 100)];
}

// Drives the sustained pattern from `threads` threads until `stop`.
class Load {
public:
    // `rate`: requests/s over all threads (0: as fast as the writer takes them).
    Load(Store& store, int threads, std::size_t in_flight, double rate = 0) : store_(store) {
        for (int t = 0; t < threads; ++t) {
            threads_.emplace_back([this, t, in_flight, rate, threads] {
                run(static_cast<std::uint64_t>(t) << 40, in_flight, rate / threads);
            });
        }
    }
    ~Load() {
        stop_ = true;
        for (auto& thread : threads_) thread.join();
    }
    std::uint64_t completed() const { return completed_.load(); }

private:
    void run(std::uint64_t base, std::size_t in_flight, double rate) {
        std::mutex mutex;
        std::condition_variable room;
        std::size_t outstanding = 0;
        const auto interval = rate > 0 ? std::chrono::duration<double>(1.0 / rate) : std::chrono::duration<double>(0);
        auto next = Steady::now();
        for (std::uint64_t n = base; !stop_; ++n) {
            if (rate > 0) {
                next += std::chrono::duration_cast<Steady::duration>(interval);
                std::this_thread::sleep_until(next);
            }
            {
                std::unique_lock lock(mutex);
                room.wait(lock, [&] { return outstanding < in_flight; });
                ++outstanding;
            }
            auto row = request_row(n);
            auto allowed = event(row, "action.allowed");
            store_.commit(row, {allowed}, [this, row, &mutex, &room, &outstanding](const std::string&) mutable {
                // The upstream answered: the row is completed.
                row.status = 200;
                row.response_bytes = 128;
                row.latency = std::chrono::microseconds(90);
                auto executed = event(row, "action.executed");
                store_.record(std::move(row), {std::move(executed)});
                ++completed_;
                std::lock_guard lock(mutex);
                --outstanding;
                room.notify_one();
            });
        }
        std::unique_lock lock(mutex);
        room.wait(lock, [&] { return outstanding == 0; });
    }

    Store& store_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> completed_{0};
    std::vector<std::thread> threads_;
};

void BM_Fsync4K(benchmark::State& state) {
    TempDir dir("tf-bench");
    const auto path = dir.path() / "fsync.bin";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    const std::string block(4096, 'x');
    std::vector<double> micros;
    for (auto _ : state) {
        const auto start = Steady::now();
        if (::pwrite(fd, block.data(), block.size(), 0) != 4096 || ::fdatasync(fd) != 0) {
            state.SkipWithError("write or fdatasync failed");
            break;
        }
        micros.push_back(std::chrono::duration<double, std::micro>(Steady::now() - start).count());
    }
    ::close(fd);
    percentiles(state, micros);
}

std::string commit_and_wait(Store& store, std::uint64_t n) {
    std::mutex mutex;
    std::condition_variable done;
    std::optional<std::string> result;
    auto row = request_row(n);
    auto allowed = event(row, "action.allowed");
    store.commit(std::move(row), {std::move(allowed)}, [&](const std::string& error) {
        std::lock_guard lock(mutex);
        result = error;
        done.notify_one();
    });
    std::unique_lock lock(mutex);
    done.wait(lock, [&] { return result.has_value(); });
    return *result;
}

void BM_CommitLatency(benchmark::State& state) {
    TempDir dir("tf-bench");
    auto store = open_store(dir, state.range(0) != 0);
    std::vector<double> micros;
    std::uint64_t n = 0;
    for (auto _ : state) {
        const auto start = Steady::now();
        if (!commit_and_wait(*store, ++n).empty()) state.SkipWithError("commit failed");
        micros.push_back(std::chrono::duration<double, std::micro>(Steady::now() - start).count());
    }
    percentiles(state, micros);
}

void BM_CommitLatencyUnderLoad(benchmark::State& state) {
    TempDir dir("tf-bench");
    auto store = open_store(dir, state.range(0) != 0);
    std::vector<double> micros;
    std::uint64_t n = 1ULL << 50;
    Load load(*store, 4, 4096, static_cast<double>(state.range(1)));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto before = load.completed();
    const auto started = Steady::now();
    for (auto _ : state) {
        const auto start = Steady::now();
        if (!commit_and_wait(*store, ++n).empty()) state.SkipWithError("commit failed");
        micros.push_back(std::chrono::duration<double, std::micro>(Steady::now() - start).count());
    }
    const double seconds = std::chrono::duration<double>(Steady::now() - started).count();
    state.counters["background_requests_per_second"] = static_cast<double>(load.completed() - before) / seconds;
    percentiles(state, micros);
}

void BM_Sustained(benchmark::State& state) {
    TempDir dir("tf-bench");
    auto store = open_store(dir, state.range(0) != 0);
    std::uint64_t requests = 0;
    double seconds = 0;
    for (auto _ : state) {
        const auto start = Steady::now();
        {
            Load load(*store, 4, 512);
            std::this_thread::sleep_for(std::chrono::seconds(2));
            requests += load.completed();
        }
        store->flush();
        seconds += std::chrono::duration<double>(Steady::now() - start).count();
    }
    const auto counters = store->counters();
    state.counters["requests_per_second"] = static_cast<double>(requests) / seconds;
    state.counters["records_per_second"] = 4.0 * static_cast<double>(requests) / seconds;
    state.counters["writes_per_transaction"] = static_cast<double>(counters.committed_writes) /
                                               static_cast<double>(std::max<std::uint64_t>(counters.transactions, 1));
}

BENCHMARK(BM_Fsync4K)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CommitLatency)->Arg(1)->Arg(0)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CommitLatencyUnderLoad)
    ->Args({1, 1000})
    ->Args({1, 5000})
    ->Args({0, 1000})
    ->Args({0, 5000})
    ->UseRealTime()
    ->MinTime(1.0);
BENCHMARK(BM_Sustained)->Arg(1)->Arg(0)->UseRealTime()->Iterations(1);

}  // namespace
