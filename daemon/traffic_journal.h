// Until the store (SQLite traffic log) exists: each proxied request becomes
// one structured log line, with the same metadata the traffic log will hold.
#pragma once

#include "daemon/proxy/interfaces.h"

namespace tameflare::daemon {

class JournalTrafficSink : public proxy::TrafficSink {
public:
    void record(proxy::TrafficRecord record) override;
};

}  // namespace tameflare::daemon
