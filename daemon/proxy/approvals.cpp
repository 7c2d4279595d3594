#include "daemon/proxy/approvals.h"

namespace tameflare::proxy {

void ApprovalQueue::submit(const ApprovalRequest& request, std::function<void(ApprovalAnswer)> answer) {
    std::function<void(const ApprovalRequest&)> observer;
    {
        std::lock_guard lock(mutex_);
        held_.insert_or_assign(request.id, Held{request, std::move(answer)});
        observer = observer_;
    }
    if (observer) observer(request);
}

void ApprovalQueue::withdraw(std::string_view id) {
    std::lock_guard lock(mutex_);
    if (const auto it = held_.find(id); it != held_.end()) held_.erase(it);
}

bool ApprovalQueue::answer(std::string_view id, ApprovalAnswer answer) {
    std::function<void(ApprovalAnswer)> deliver;
    {
        std::lock_guard lock(mutex_);
        const auto it = held_.find(id);
        if (it == held_.end()) return false;
        deliver = std::move(it->second.answer);
        held_.erase(it);
    }
    deliver(std::move(answer));
    return true;
}

std::size_t ApprovalQueue::deny_if(const std::function<bool(const ApprovalRequest&)>& matches,
                                   const std::string& note) {
    std::vector<std::function<void(ApprovalAnswer)>> denied;
    {
        std::lock_guard lock(mutex_);
        for (auto it = held_.begin(); it != held_.end();) {
            if (matches(it->second.request)) {
                denied.push_back(std::move(it->second.answer));
                it = held_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& deliver : denied) deliver(ApprovalAnswer{false, note});
    return denied.size();
}

std::vector<ApprovalRequest> ApprovalQueue::pending() const {
    std::lock_guard lock(mutex_);
    std::vector<ApprovalRequest> out;
    out.reserve(held_.size());
    for (const auto& [id, held] : held_) out.push_back(held.request);
    return out;
}

std::size_t ApprovalQueue::size() const {
    std::lock_guard lock(mutex_);
    return held_.size();
}

void ApprovalQueue::on_submit(std::function<void(const ApprovalRequest&)> observer) {
    std::lock_guard lock(mutex_);
    observer_ = std::move(observer);
}

}  // namespace tameflare::proxy
