#include "daemon/control/metrics.h"

#include "daemon/store/query.h"

#include <sstream>
#include <utility>

namespace tameflare::control {

namespace {

// A label value in the text exposition format: backslash, quote and newline escaped.
std::string label(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

void family(std::ostringstream& out, const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

}  // namespace

void Metrics::histogram(std::ostringstream& out, const char* name, const char* help,
                        const std::map<std::string, Histogram>& series) {
    family(out, name, "histogram", help);
    for (const auto& [gateway, values] : series) {
        const std::string labels = "gateway=\"" + label(gateway) + "\"";
        for (std::size_t i = 0; i < kBuckets.size(); ++i) {
            out << name << "_bucket{" << labels << ",le=\"" << kBuckets[i] << "\"} " << values.buckets[i] << '\n';
        }
        out << name << "_bucket{" << labels << ",le=\"+Inf\"} " << values.count << '\n';
        out << name << "_sum{" << labels << "} " << values.sum << '\n';
        out << name << "_count{" << labels << "} " << values.count << '\n';
    }
}

void Metrics::record(proxy::TrafficRecord record) {
    {
        std::lock_guard lock(mutex_);
        ++requests_[Labels{record.gateway, record.agent, record.connector, record.decision, record.action}];
        if (record.decision == "denied" || record.decision == "kill_switch") ++denied_[record.gateway];
        if (record.decision == "rate_limited") ++rate_limited_[record.gateway];
        if (record.decision == "error") ++connector_errors_[record.connector];
        if (record.action == "tls.certificate_refused") ++certificates_refused_[{record.gateway, record.host}];
        duration_[record.gateway].observe(std::chrono::duration<double>(record.latency).count());
        if (record.forwarded) {
            overhead_[record.gateway].observe(std::chrono::duration<double>(record.overhead).count());
        }
    }
    // On the proxy's path for every request: the event is built only for a watcher.
    if (hub_.watched()) {
        hub_.publish(Event{0,
                           "traffic",
                           {{"time", store::format_time(record.time)},
                            {"request_id", record.request_id},
                            {"gateway", record.gateway},
                            {"agent", record.agent},
                            {"connector", record.connector},
                            {"action", record.action},
                            {"method", record.method},
                            {"host", record.host},
                            {"path", record.path},
                            {"decision", record.decision},
                            {"reason", record.reason},
                            {"status", record.status},
                            {"latency_us", record.latency.count()}}});
    }
    inner_.record(std::move(record));
}

void Metrics::commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) {
    inner_.commit(std::move(record), std::move(done));
}

void Metrics::approval_answered(bool approved) {
    std::lock_guard lock(mutex_);
    ++(approved ? approved_ : approvals_denied_);
}

std::string Metrics::render(const Gauges& gauges) const {
    std::ostringstream out;
    std::lock_guard lock(mutex_);
    family(out, "tameflare_requests_total", "counter", "Requests decided by the proxy.");
    for (const auto& [labels, count] : requests_) {
        const auto& [gateway, agent, connector, decision, action] = labels;
        out << "tameflare_requests_total{gateway=\"" << label(gateway) << "\",agent=\"" << label(agent)
            << "\",connector=\"" << label(connector) << "\",decision=\"" << label(decision) << "\",action_type=\""
            << label(action) << "\"} " << count << '\n';
    }
    family(out, "tameflare_requests_denied_total", "counter", "Requests denied (policy or kill switch).");
    for (const auto& [gateway, count] : denied_) {
        out << "tameflare_requests_denied_total{gateway=\"" << label(gateway) << "\"} " << count << '\n';
    }
    family(out, "tameflare_requests_approved_total", "counter", "Held requests a human approved.");
    out << "tameflare_requests_approved_total " << approved_ << '\n';
    histogram(out, "tameflare_request_duration_seconds", "Time from request to response, per gateway.", duration_);
    histogram(out, "tameflare_proxy_overhead_seconds",
              "Time a forwarded request spent in the proxy before it went upstream (decision, log commit, "
              "upstream connect).",
              overhead_);
    family(out, "tameflare_active_connections", "gauge", "Agent connections open now.");
    out << "tameflare_active_connections " << gauges.active_connections << '\n';
    family(out, "tameflare_kill_switch_active", "gauge", "Kill switch scopes in force.");
    out << "tameflare_kill_switch_active{scope=\"all\"} " << (gauges.kill_switch_all ? 1 : 0) << '\n';
    out << "tameflare_kill_switch_active{scope=\"gateway\"} " << gauges.kill_switch_gateways << '\n';
    out << "tameflare_kill_switch_active{scope=\"connector\"} " << gauges.kill_switch_connectors << '\n';
    family(out, "tameflare_approvals_pending", "gauge", "Requests held for a human's answer.");
    out << "tameflare_approvals_pending " << gauges.approvals_pending << '\n';
    family(out, "tameflare_connector_errors_total", "counter", "Requests that failed upstream, per connector.");
    for (const auto& [connector, count] : connector_errors_) {
        out << "tameflare_connector_errors_total{connector=\"" << label(connector) << "\"} " << count << '\n';
    }
    family(out, "tameflare_rate_limit_hits_total", "counter", "Requests refused by the rate limit.");
    for (const auto& [gateway, count] : rate_limited_) {
        out << "tameflare_rate_limit_hits_total{gateway=\"" << label(gateway) << "\"} " << count << '\n';
    }
    family(out, "tameflare_tls_certificate_refused_total", "counter",
           "TLS handshakes a client aborted because it does not trust the interception CA.");
    for (const auto& [key, count] : certificates_refused_) {
        out << "tameflare_tls_certificate_refused_total{gateway=\"" << label(key.first) << "\",host=\""
            << label(key.second) << "\"} " << count << '\n';
    }
    family(out, "tameflare_agents", "gauge", "Agents running or enforced now.");
    out << "tameflare_agents " << gauges.agents << '\n';
    return out.str();
}

}  // namespace tameflare::control
