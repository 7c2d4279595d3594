// Live events for the control plane's watchers (REST /v1/events as
// Server-Sent Events, D-Bus signals), and the decorators that produce them
// from the proxy's path.
#pragma once

#include "daemon/proxy/interfaces.h"

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace tameflare::control {

enum class Role;

// Types: approval.requested, approval.resolved, kill_switch.changed,
// agent.started, agent.exited, config.reloaded, enforcement.changed, traffic.
struct Event {
    std::uint64_t id = 0;  // increasing, assigned by publish()
    std::string type;
    nlohmann::json data;
    int visible_to = 1;                        // the least Role (as int) that sees it; 1 = viewer
    uid_t owner_uid = static_cast<uid_t>(-1);  // also visible to this uid (events of its own agents)
};

// Thread-safe fan-out. Callbacks run on the publisher's thread, outside the
// hub's lock order for publishing but serialized per hub; they must not block
// and must not call subscribe/unsubscribe.
class EventHub {
public:
    std::uint64_t subscribe(std::function<void(const Event&)> callback);
    void unsubscribe(std::uint64_t subscription);
    void publish(Event event);
    // Whether anyone listens: publishers skip building events nobody reads.
    [[nodiscard]] bool watched() const { return subscribers_count_.load(std::memory_order_relaxed) != 0; }

private:
    std::atomic<std::size_t> subscribers_count_{0};
    std::mutex mutex_;
    std::uint64_t next_event_ = 1;
    std::uint64_t next_subscription_ = 1;
    std::map<std::uint64_t, std::function<void(const Event&)>> subscribers_;
};

// Publishes approval.requested for each held request and approval.resolved
// for each answer, timeout or withdrawal, then passes the call on to `inner`.
class ObservedApprovals : public proxy::ApprovalBroker {
public:
    ObservedApprovals(proxy::ApprovalBroker& inner, EventHub& hub) : inner_(inner), hub_(hub) {}
    void submit(const proxy::ApprovalRequest& request, std::function<void(proxy::ApprovalAnswer)> answer) override;
    void withdraw(std::string_view id) override;

private:
    bool settle(const std::string& id);  // true the first time for a pending id

    proxy::ApprovalBroker& inner_;
    EventHub& hub_;
    std::mutex mutex_;
    std::set<std::string, std::less<>> pending_;
};

}  // namespace tameflare::control
