#include "daemon/traffic_journal.h"

#include "common/log.h"

#include <string>

namespace tameflare::daemon {

std::string_view journal_decision(std::string_view label) {
    if (label == "allowed" || label == "approved" || label.starts_with("would_")) return "allow";
    if (label == "pending_approval") return "hold";
    if (label == "error") return "error";
    return "deny";  // denied, rate_limited, kill_switch, approval_timeout
}

void journal_record(const proxy::TrafficRecord& record) {
    const std::string status = std::to_string(record.status);
    const std::string latency = std::to_string(record.latency.count());
    const std::string sent = std::to_string(record.request_bytes);
    const std::string received = std::to_string(record.response_bytes);
    const std::string message = record.decision + " " + record.method + " " + record.host + record.path + " -> " +
                                status + (record.action.empty() ? "" : " (" + record.action + ")");
    const auto decision = journal_decision(record.decision);
    log_queued(decision == "allow" ? LogLevel::info : LogLevel::notice, message,
               {{"MESSAGE_ID", message_id::decision},
                {"REQUEST_ID", record.request_id},
                {"GATEWAY", record.gateway},
                {"AGENT", record.agent},
                {"CONNECTOR", record.connector},
                {"ACTION", record.action},
                {"DECISION", decision},
                {"OUTCOME", record.decision},
                {"REASON", record.reason},
                {"METHOD", record.method},
                {"HOST", record.host},
                {"STATUS", status},
                {"REQUEST_BYTES", sent},
                {"RESPONSE_BYTES", received},
                {"LATENCY_US", latency}});
}

void JournalTrafficSink::record(proxy::TrafficRecord record) {
    journal_record(record);
}

}  // namespace tameflare::daemon
