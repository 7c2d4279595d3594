// The daemon's approval queue: requests held by the proxy wait here until a
// human answers through the control plane, they time out, or a kill switch
// denies them. Thread-safe; answers are delivered outside the lock.
#pragma once

#include "daemon/proxy/interfaces.h"

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tameflare::proxy {

class ApprovalQueue : public ApprovalBroker {
public:
    void submit(const ApprovalRequest& request, std::function<void(ApprovalAnswer)> answer) override;
    void withdraw(std::string_view id) override;

    // false when no request with that id is pending (answered, timed out, gone).
    bool answer(std::string_view id, ApprovalAnswer answer);
    // Denies every pending request `matches` selects; returns how many.
    std::size_t deny_if(const std::function<bool(const ApprovalRequest&)>& matches, const std::string& note);

    [[nodiscard]] std::vector<ApprovalRequest> pending() const;
    [[nodiscard]] std::size_t size() const;

    // Called after each submit (outside the lock), e.g. to signal the control plane.
    void on_submit(std::function<void(const ApprovalRequest&)> observer);

private:
    struct Held {
        ApprovalRequest request;
        std::function<void(ApprovalAnswer)> answer;
    };
    mutable std::mutex mutex_;
    std::map<std::string, Held, std::less<>> held_;
    std::function<void(const ApprovalRequest&)> observer_;
};

}  // namespace tameflare::proxy
