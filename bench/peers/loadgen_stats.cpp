#include "bench/peers/loadgen_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tameflare::loadgen {

namespace {

// Enough for a 10 s window at 100k requests/s without growing.
constexpr std::size_t kReserved = std::size_t{1} << 20;

// Nearest rank: the smallest value with at least `fraction` of the values at or below it.
std::uint32_t percentile(const std::vector<std::uint32_t>& sorted, double fraction) {
    const auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

std::string_view error_name(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::connect: return "connect";
        case ErrorKind::proxy_connect: return "proxy_connect";
        case ErrorKind::tls: return "tls";
        case ErrorKind::status: return "status";
        case ErrorKind::body: return "body";
        case ErrorKind::timeout: return "timeout";
        case ErrorKind::io: return "io";
        case ErrorKind::protocol: return "protocol";
    }
    return "?";
}

std::uint64_t ErrorCounts::total() const {
    return std::accumulate(counts_.begin(), counts_.end(), std::uint64_t{0});
}

nlohmann::ordered_json ErrorCounts::to_json() const {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (std::size_t i = 0; i < kErrorKinds; ++i) out[std::string(error_name(static_cast<ErrorKind>(i)))] = counts_[i];
    return out;
}

Latencies::Latencies() {
    values_.reserve(kReserved);
}

nlohmann::ordered_json Latencies::summarize() {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    if (values_.empty()) {
        for (const char* key : {"p50", "p90", "p99", "p999", "max", "mean"}) out[key] = nullptr;
        return out;
    }
    std::sort(values_.begin(), values_.end());
    out["p50"] = percentile(values_, 0.50);
    out["p90"] = percentile(values_, 0.90);
    out["p99"] = percentile(values_, 0.99);
    out["p999"] = percentile(values_, 0.999);
    out["max"] = values_.back();
    out["mean"] = std::round(static_cast<double>(sum_) / static_cast<double>(values_.size()) * 10) / 10;
    return out;
}

}  // namespace tameflare::loadgen
