#include "daemon/control/events.h"

#include "daemon/control/model.h"

#include "daemon/store/query.h"

#include <utility>

namespace tameflare::control {

std::uint64_t EventHub::subscribe(std::function<void(const Event&)> callback) {
    std::lock_guard lock(mutex_);
    const auto id = next_subscription_++;
    subscribers_.emplace(id, std::move(callback));
    subscribers_count_.store(subscribers_.size(), std::memory_order_relaxed);
    return id;
}

void EventHub::unsubscribe(std::uint64_t subscription) {
    std::lock_guard lock(mutex_);
    subscribers_.erase(subscription);
    subscribers_count_.store(subscribers_.size(), std::memory_order_relaxed);
}

void EventHub::publish(Event event) {
    // Under the lock, so that every subscriber sees events in id order and an
    // unsubscribed callback is never called afterwards.
    std::lock_guard lock(mutex_);
    event.id = next_event_++;
    for (const auto& [id, callback] : subscribers_) callback(event);
}

void ObservedApprovals::submit(const proxy::ApprovalRequest& request,
                               std::function<void(proxy::ApprovalAnswer)> answer) {
    {
        std::lock_guard lock(mutex_);
        pending_.insert(request.id);
    }
    inner_.submit(request, [this, id = request.id, gateway = request.gateway, agent = request.agent,
                            action = request.action, answer = std::move(answer)](proxy::ApprovalAnswer given) {
        if (settle(id))
            hub_.publish(Event{0,
                               "approval.resolved",
                               {{"id", id},
                                {"gateway", gateway},
                                {"agent", agent},
                                {"action", action},
                                {"approved", given.approved},
                                {"note", given.note},
                                {"actor", given.actor}}});
        answer(std::move(given));
    });
    // Announced once it can be answered (listed, found by id); not when it
    // was settled already inside submit (a kill switch, say).
    bool still_pending = false;
    {
        std::lock_guard lock(mutex_);
        still_pending = pending_.count(request.id) != 0;
    }
    if (still_pending) hub_.publish(Event{0, "approval.requested", to_json(request)});
}

bool ObservedApprovals::settle(const std::string& id) {
    std::lock_guard lock(mutex_);
    return pending_.erase(id) != 0;
}

void ObservedApprovals::withdraw(std::string_view id) {
    inner_.withdraw(id);
    if (settle(std::string(id)))
        hub_.publish(Event{0, "approval.resolved", {{"id", std::string(id)}, {"approved", false}, {"expired", true}}});
}

}  // namespace tameflare::control
