// One structured journal record per proxied request (MESSAGE_ID decision),
// beside the durable traffic log in the database:
//   DECISION=allow|deny|hold|error   what happened to the request
//   OUTCOME=<label>                  the traffic log's decision (allowed,
//                                    denied, would_deny, kill_switch, ...)
// with GATEWAY, AGENT, CONNECTOR, ACTION, REASON, STATUS, sizes and latency,
// so `journalctl -u tameflared DECISION=deny GATEWAY=ci` selects.
#pragma once

#include "daemon/proxy/interfaces.h"

#include <string_view>

namespace tameflare::daemon {

// The DECISION= value for a traffic log decision label.
std::string_view journal_decision(std::string_view label);

// Queues the journal record of one proxied request.
void journal_record(const proxy::TrafficRecord& record);

class JournalTrafficSink : public proxy::TrafficSink {
public:
    void record(proxy::TrafficRecord record) override;
};

}  // namespace tameflare::daemon
