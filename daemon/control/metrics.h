// Prometheus metrics (prefix tameflare_), counted from the traffic records
// the proxy emits, rendered as the text exposition format for /metrics.
#pragma once

#include "daemon/control/events.h"
#include "daemon/proxy/interfaces.h"

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

namespace tameflare::control {

// What /metrics shows that is not counted from records.
struct Gauges {
    std::uint64_t active_connections = 0;
    std::uint64_t approvals_pending = 0;
    bool kill_switch_all = false;
    std::size_t kill_switch_gateways = 0;
    std::size_t kill_switch_connectors = 0;
    std::size_t agents = 0;
};

// A TrafficSink decorator: counts every record, publishes it as a "traffic"
// event, and passes it on to `inner`.
class Metrics : public proxy::TrafficSink {
public:
    Metrics(proxy::TrafficSink& inner, EventHub& hub) : inner_(inner), hub_(hub) {}
    void record(proxy::TrafficRecord record) override;
    void commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) override;

    void approval_answered(bool approved);
    [[nodiscard]] std::string render(const Gauges& gauges) const;

private:
    using Labels = std::tuple<std::string, std::string, std::string, std::string,
                              std::string>;  // gateway agent connector decision action
    static constexpr std::array<double, 12> kBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1.0,  5.0};
    struct Histogram {
        void observe(double seconds) {
            for (std::size_t i = 0; i < kBuckets.size(); ++i) {
                if (seconds <= kBuckets[i]) ++buckets[i];
            }
            ++count;
            sum += seconds;
        }

        std::array<std::uint64_t, kBuckets.size()> buckets{};
        std::uint64_t count = 0;
        double sum = 0;
    };
    static void histogram(std::ostringstream& out, const char* name, const char* help,
                          const std::map<std::string, Histogram>& series);

    proxy::TrafficSink& inner_;
    EventHub& hub_;
    mutable std::mutex mutex_;
    std::map<Labels, std::uint64_t> requests_;
    std::map<std::string, std::uint64_t> denied_;            // by gateway
    std::map<std::string, std::uint64_t> rate_limited_;      // by gateway
    std::map<std::string, std::uint64_t> connector_errors_;  // by connector
    // Handshakes a client aborted, refusing the interception certificate.
    std::map<std::pair<std::string, std::string>, std::uint64_t> certificates_refused_;  // by gateway, host
    std::map<std::string, Histogram> duration_;                                          // by gateway
    std::map<std::string, Histogram> overhead_;  // by gateway, forwarded requests only
    std::uint64_t approved_ = 0;
    std::uint64_t approvals_denied_ = 0;
};

}  // namespace tameflare::control
