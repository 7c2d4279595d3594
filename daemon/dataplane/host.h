// The supervisor's side of the data plane's requests (issue 24): what the
// data plane asks of the store, the approval queue, the vault and the CA,
// answered over the Link. Everything it sends is read as hostile: a frame
// of a type the data plane does not send, or one that does not decode, is
// refused with DecodeError, and the caller closes the channel (and ends the
// data plane).
#pragma once

#include "daemon/dataplane/link.h"
#include "daemon/dataplane/protocol.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/interfaces.h"

namespace tameflare::dataplane {

struct HostServices {
    proxy::TrafficSink* traffic = nullptr;           // required
    proxy::ApprovalBroker* approvals = nullptr;      // null: held requests are denied at once
    proxy::CredentialSource* credentials = nullptr;  // null: no credential
    proxy::CertificateAuthority* ca = nullptr;       // required
};

// The Link must outlive every answer the services still owe (a commit the
// store has not finished): the supervisor drains the store before it drops
// the data plane's link.
class DataPlaneHost {
public:
    DataPlaneHost(Link& link, HostServices services) : link_(link), services_(services) {}

    // One frame from the data plane (the Link's message handler).
    void handle(const ipc::Frame& frame);

private:
    void sign(std::uint32_t seq, const SignLeaf& request);

    Link& link_;
    HostServices services_;
};

}  // namespace tameflare::dataplane
