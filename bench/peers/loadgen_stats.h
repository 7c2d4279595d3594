// What tf_loadgen counts: latencies of the successful requests, errors by kind.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tameflare::loadgen {

enum class ErrorKind : std::uint8_t {
    connect,        // TCP connect failed (refused, unreachable)
    proxy_connect,  // the proxy refused CONNECT or answered it badly
    tls,            // TLS handshake failed (certificate, protocol)
    status,         // a response with an unexpected status
    body,           // a body cut short, too long, or not --expect-bytes long
    timeout,        // no answer within the per-request timeout
    io,             // the connection failed or closed mid-request
    protocol,       // a response that is not valid HTTP
};
inline constexpr std::size_t kErrorKinds = 8;

std::string_view error_name(ErrorKind kind);

class ErrorCounts {
public:
    void add(ErrorKind kind) { ++counts_.at(static_cast<std::size_t>(kind)); }
    std::uint64_t total() const;
    // {"connect":0,"proxy_connect":0,...}, every kind present.
    nlohmann::ordered_json to_json() const;

private:
    std::array<std::uint64_t, kErrorKinds> counts_{};
};

// Every latency of a window, in microseconds: exact percentiles, 4 bytes a request.
class Latencies {
public:
    Latencies();
    void add(std::uint32_t micros) {
        values_.push_back(micros);
        sum_ += micros;
    }
    std::size_t count() const { return values_.size(); }
    // {"p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..}; sorts the values.
    nlohmann::ordered_json summarize();

private:
    std::vector<std::uint32_t> values_;
    std::uint64_t sum_ = 0;
};

}  // namespace tameflare::loadgen
