// The store, seen through the proxy's interfaces: the traffic sink that makes
// a forwarded request durable before it leaves, approvals that are recorded,
// credentials from the vault, and the kill switch that survives restarts.
#pragma once

#include "daemon/proxy/interfaces.h"
#include "daemon/proxy/server.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "policy/engine.h"

#include <string>

namespace tameflare::daemon {

// Traffic rows and their audit events (action.allowed before the forward;
// action.executed, action.denied or action.failed when the request ends),
// plus one structured journal line per request.
class StoreTrafficSink : public proxy::TrafficSink {
public:
    explicit StoreTrafficSink(store::Store& store, bool journal = true) : store_(store), journal_(journal) {}
    void record(proxy::TrafficRecord record) override;
    void commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) override;

private:
    store::Store& store_;
    bool journal_;
};

// Every held request is recorded (action.pending_approval) and every answer,
// timeout or withdrawal is an approval.responded event; `inner` holds them.
class RecordedApprovals : public proxy::ApprovalBroker {
public:
    RecordedApprovals(proxy::ApprovalBroker& inner, store::Store& store) : inner_(inner), store_(store) {}
    void submit(const proxy::ApprovalRequest& request, std::function<void(proxy::ApprovalAnswer)> answer) override;
    void withdraw(std::string_view id) override;

private:
    proxy::ApprovalBroker& inner_;
    store::Store& store_;
};

class VaultCredentials : public proxy::CredentialSource {
public:
    explicit VaultCredentials(store::Vault& vault) : vault_(vault) {}
    // A store that cannot be read gives no credential (the request fails
    // closed with 502 credential_missing), and is logged.
    std::optional<std::string> credential(std::string_view name) override;

private:
    store::Vault& vault_;
};

store::TrafficRow to_row(proxy::TrafficRecord record);

}  // namespace tameflare::daemon
