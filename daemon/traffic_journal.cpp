#include "daemon/traffic_journal.h"

#include "daemon/log.h"

#include <string>

namespace tameflare::daemon {

void JournalTrafficSink::record(proxy::TrafficRecord record) {
    const std::string status = std::to_string(record.status);
    const std::string latency = std::to_string(record.latency.count());
    const std::string sent = std::to_string(record.request_bytes);
    const std::string received = std::to_string(record.response_bytes);
    const std::string message = record.decision + " " + record.method + " " + record.host + record.path + " -> " +
                                status + (record.action.empty() ? "" : " (" + record.action + ")");
    log(record.decision == "allowed" || record.decision == "approved" ? LogLevel::info : LogLevel::notice, message,
        {{"REQUEST_ID", record.request_id},
         {"GATEWAY", record.gateway},
         {"AGENT", record.agent},
         {"CONNECTOR", record.connector},
         {"ACTION", record.action},
         {"DECISION", record.decision},
         {"REASON", record.reason},
         {"STATUS", status},
         {"REQUEST_BYTES", sent},
         {"RESPONSE_BYTES", received},
         {"LATENCY_US", latency}});
}

}  // namespace tameflare::daemon
