// The supervisor's side of the data plane's requests (issue 24): what the
// data plane asks of the store, the approval queue, the vault and the CA,
// answered over the Link. Everything it sends is read as hostile: a frame
// of a type the data plane does not send, or one that does not decode, is
// refused with DecodeError, and the caller closes the channel (and ends the
// data plane).
#pragma once

#include "bpf/origin_map.h"
#include "daemon/dataplane/link.h"
#include "daemon/dataplane/protocol.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/interfaces.h"

#include <memory>
#include <mutex>

namespace tameflare::dataplane {

struct HostServices {
    proxy::TrafficSink* traffic = nullptr;           // required
    proxy::ApprovalBroker* approvals = nullptr;      // null: held requests are denied at once
    proxy::CredentialSource* credentials = nullptr;  // null: no credential
    proxy::CertificateAuthority* ca = nullptr;       // required
    bpf::OriginSource origins;                       // null: no origin is known
};

// An answer the services owe after the link went (a commit the store
// finishes after the data plane died) goes nowhere: the owner calls detach()
// before the Link goes, and every answer given later is dropped.
class DataPlaneHost {
public:
    DataPlaneHost(Link& link, HostServices services)
        : target_(std::make_shared<Target>(&link)), services_(std::move(services)) {}
    ~DataPlaneHost() { detach(); }
    DataPlaneHost(const DataPlaneHost&) = delete;
    DataPlaneHost& operator=(const DataPlaneHost&) = delete;

    // One frame from the data plane (the Link's message handler).
    void handle(const ipc::Frame& frame);
    // From now on, answers still owed go nowhere. Waits for one being sent.
    void detach();

private:
    // The Link answers go to, while there is one; shared with the answers owed.
    struct Target {
        explicit Target(Link* to) : link(to) {}
        std::mutex mutex;
        Link* link;  // under mutex; null once detached
    };
    template <typename Send>
    static void answer(const std::shared_ptr<Target>& target, Send send) {
        const std::lock_guard lock(target->mutex);
        if (target->link != nullptr) send(*target->link);
    }
    void sign(std::uint32_t seq, const SignLeaf& request);

    std::shared_ptr<Target> target_;
    HostServices services_;
};

}  // namespace tameflare::dataplane
