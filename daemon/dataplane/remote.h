// The data plane's side of the services the proxy uses (proxy::ProxyServices),
// each one a request or message over the Link to the supervisor (issue 24):
//
//   RemoteTraffic      records in batches; a commit waits for the store's word
//                      ("" once durable), and a closed channel is an error, so
//                      nothing is forwarded unlogged
//   RemoteApprovals    held requests submitted, answered by Answer messages;
//                      a closed channel denies every one still waiting
//   RemoteCredentials  one request per credential asked for (see
//                      docs/security.md for why not a pushed cache)
//   RemoteLeaves       leaves over the data plane's own key, signed by the
//                      supervisor on a miss and kept in a LeafCache
#pragma once

#include "daemon/dataplane/link.h"
#include "daemon/dataplane/protocol.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/interfaces.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::dataplane {

// How long the proxy waits for the supervisor's answer to a credential or a
// leaf before it refuses the request.
inline constexpr std::chrono::milliseconds kCallTimeout{5000};

class RemoteTraffic : public proxy::TrafficSink {
public:
    // Records wait at most `interval` (or until a frame's worth) before they cross.
    explicit RemoteTraffic(Link& link, std::chrono::milliseconds interval = std::chrono::milliseconds(20));
    ~RemoteTraffic() override;
    RemoteTraffic(const RemoteTraffic&) = delete;
    RemoteTraffic& operator=(const RemoteTraffic&) = delete;

    void record(proxy::TrafficRecord record) override;
    void commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) override;
    // Sends what waits now.
    void flush();

private:
    void flush_loop();
    void flush_locked();  // under sending_

    Link& link_;
    // Held while a batch (or a commit) is sent: two flushes never overtake each other.
    std::mutex sending_;
    std::chrono::milliseconds interval_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<proxy::TrafficRecord> batch_;  // under mutex_
    std::size_t batch_bytes_ = 0;              // under mutex_
    bool stopping_ = false;                    // under mutex_
    std::thread flusher_;
};

class RemoteApprovals : public proxy::ApprovalBroker {
public:
    explicit RemoteApprovals(Link& link) : link_(link) {}

    void submit(const proxy::ApprovalRequest& request, std::function<void(proxy::ApprovalAnswer)> answer) override;
    void withdraw(std::string_view id) override;
    // An Answer from the supervisor (the Link's message handler calls it).
    void answered(const Answer& answer);
    // The channel closed: every request still held is denied.
    void deny_all(const std::string& why);

private:
    Link& link_;
    std::mutex mutex_;
    std::map<std::string, std::function<void(proxy::ApprovalAnswer)>, std::less<>> held_;
};

class RemoteCredentials : public proxy::CredentialSource {
public:
    explicit RemoteCredentials(Link& link) : link_(link) {}
    std::optional<std::string> credential(std::string_view name) override;

private:
    Link& link_;
};

class RemoteLeaves : public proxy::LeafSource {
public:
    explicit RemoteLeaves(Link& link, std::size_t cache_size = proxy::CertificateAuthority::kDefaultCacheSize);
    std::shared_ptr<const proxy::LeafCertificate> leaf_for(std::string_view server_name) override;

private:
    Link& link_;
    proxy::LeafCache cache_;
};

}  // namespace tameflare::dataplane
