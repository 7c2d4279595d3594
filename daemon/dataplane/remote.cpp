#include "daemon/dataplane/remote.h"

#include <openssl/x509.h>

#include <stdexcept>

namespace tameflare::dataplane {
namespace {

// A record's share of a Records frame, roughly: its strings and fixed fields.
std::size_t size_of(const proxy::TrafficRecord& record) {
    return 128 + record.request_id.size() + record.gateway.size() + record.agent.size() + record.connector.size() +
           record.action.size() + record.method.size() + record.host.size() + record.path.size() +
           record.decision.size() + record.reason.size();
}

// What a Records frame may carry: well under the frame's limit.
constexpr std::size_t kBatchBytes = std::size_t{96} * 1024;

}  // namespace

// ---------------------------------------------------------------------------

RemoteTraffic::RemoteTraffic(Link& link, std::chrono::milliseconds interval) : link_(link), interval_(interval) {
    flusher_ = std::thread([this] { flush_loop(); });
}

RemoteTraffic::~RemoteTraffic() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    flusher_.join();
    flush();
}

void RemoteTraffic::record(proxy::TrafficRecord record) {
    bool full = false;
    {
        std::lock_guard lock(mutex_);
        batch_bytes_ += size_of(record);
        batch_.push_back(std::move(record));
        full = batch_bytes_ >= kBatchBytes || batch_.size() >= kMaxList;
    }
    if (full) wake_.notify_all();
}

void RemoteTraffic::commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) {
    // Records made before it go first, so that the store sees them in order.
    const std::lock_guard sending(sending_);
    flush_locked();
    link_.request(Commit{std::move(record)}, [done = std::move(done)](std::optional<ipc::Frame> reply) {
        if (!reply) {
            done("the supervisor is gone: the record cannot be made durable");
            return;
        }
        try {
            done(ipc::decode<Committed>(*reply).error);
        } catch (const std::exception& error) {
            done(std::string("the supervisor's answer to a commit: ") + error.what());
        }
    });
}

void RemoteTraffic::flush() {
    const std::lock_guard sending(sending_);
    flush_locked();
}

void RemoteTraffic::flush_locked() {
    std::vector<proxy::TrafficRecord> batch;
    {
        std::lock_guard lock(mutex_);
        batch.swap(batch_);
        batch_bytes_ = 0;
    }
    // In frames of at most kBatchBytes.
    Records frame;
    std::size_t bytes = 0;
    for (auto& record : batch) {
        const auto size = size_of(record);
        if (!frame.records.empty() && (bytes + size > kBatchBytes || frame.records.size() >= kMaxList)) {
            link_.post(frame);
            frame.records.clear();
            bytes = 0;
        }
        bytes += size;
        frame.records.push_back(std::move(record));
    }
    if (!frame.records.empty()) link_.post(frame);
}

void RemoteTraffic::flush_loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        wake_.wait_for(lock, interval_, [this] { return stopping_ || batch_bytes_ >= kBatchBytes; });
        if (batch_.empty()) continue;
        lock.unlock();
        flush();
        lock.lock();
    }
}

// ---------------------------------------------------------------------------

void RemoteApprovals::submit(const proxy::ApprovalRequest& request, std::function<void(proxy::ApprovalAnswer)> answer) {
    {
        std::lock_guard lock(mutex_);
        held_[request.id] = std::move(answer);
    }
    if (!link_.post(Submit{request})) {
        std::function<void(proxy::ApprovalAnswer)> refused;
        {
            std::lock_guard lock(mutex_);
            if (const auto found = held_.find(request.id); found != held_.end()) {
                refused = std::move(found->second);
                held_.erase(found);
            }
        }
        if (refused) refused({false, "the supervisor is gone: nobody can approve it", ""});
    }
}

void RemoteApprovals::withdraw(std::string_view id) {
    {
        std::lock_guard lock(mutex_);
        const auto found = held_.find(id);
        if (found == held_.end()) return;
        held_.erase(found);
    }
    link_.post(Withdraw{std::string(id)});
}

void RemoteApprovals::answered(const Answer& answer) {
    std::function<void(proxy::ApprovalAnswer)> waiting;
    {
        std::lock_guard lock(mutex_);
        const auto found = held_.find(answer.id);
        if (found == held_.end()) return;  // withdrawn meanwhile
        waiting = std::move(found->second);
        held_.erase(found);
    }
    waiting(answer.answer);
}

void RemoteApprovals::deny_all(const std::string& why) {
    std::map<std::string, std::function<void(proxy::ApprovalAnswer)>, std::less<>> held;
    {
        std::lock_guard lock(mutex_);
        held.swap(held_);
    }
    for (auto& [id, answer] : held) answer({false, why, ""});
}

// ---------------------------------------------------------------------------

std::optional<std::string> RemoteCredentials::credential(std::string_view name) {
    const auto reply = link_.call(CredentialRequest{std::string(name)}, kCallTimeout);
    if (!reply) return std::nullopt;
    try {
        auto answer = ipc::decode<Credential>(*reply);
        if (!answer.found) return std::nullopt;
        return std::move(answer.value);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// ---------------------------------------------------------------------------

namespace {

std::string public_key_der(EVP_PKEY* key) {
    unsigned char* der = nullptr;
    const int length = i2d_PUBKEY(key, &der);
    if (length <= 0) throw std::runtime_error("cannot encode the data plane's leaf key");
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    return out;
}

}  // namespace

RemoteLeaves::RemoteLeaves(Link& link, std::size_t cache_size)
    : link_(link),
      cache_(
          proxy::new_leaf_key(),
          [this](const std::string& name, EVP_PKEY* key) {
              const auto reply = link_.call(SignLeaf{name, public_key_der(key)}, kCallTimeout);
              if (!reply) throw std::runtime_error("the supervisor did not sign a certificate for " + name);
              const auto leaf = ipc::decode<Leaf>(*reply);
              if (!leaf.error.empty()) throw std::runtime_error(leaf.error);
              const auto* bytes = reinterpret_cast<const unsigned char*>(leaf.certificate.data());
              proxy::X509Ptr certificate(d2i_X509(nullptr, &bytes, static_cast<long>(leaf.certificate.size())));
              if (!certificate) throw std::runtime_error("the supervisor's certificate for " + name + " is not DER");
              return certificate;
          },
          cache_size) {}

std::shared_ptr<const proxy::LeafCertificate> RemoteLeaves::leaf_for(std::string_view server_name) {
    return cache_.leaf_for(server_name);
}

}  // namespace tameflare::dataplane
