#include "daemon/store/audit.h"

#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

namespace tameflare::store {

namespace {

constexpr std::string_view kCheckpointLabel = "tameflare-audit-checkpoint-v1";

Hash to_hash(const std::string& blob) {
    Hash hash{};
    if (blob.size() == hash.size()) std::memcpy(hash.data(), blob.data(), hash.size());
    return hash;
}

void put_be64(std::string& out, std::int64_t value) {
    for (int shift = 56; shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>((static_cast<std::uint64_t>(value) >> shift) & 0xff));
    }
}

}  // namespace

std::string to_hex(std::span<const std::uint8_t> bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string text;
    text.reserve(bytes.size() * 2);
    for (const auto byte : bytes) {
        text.push_back(kDigits[byte >> 4]);
        text.push_back(kDigits[byte & 0xf]);
    }
    return text;
}

std::string canonical(std::int64_t seq, std::int64_t time_micros, const AuditEvent& event) {
    // nlohmann::json objects keep their keys sorted, so dump() is canonical.
    // Filled key by key: an initializer list first builds every pair as a
    // two-element array, which cost a third of this function (runs twice per
    // proxied request).
    nlohmann::json record = nlohmann::json::object();
    record["seq"] = seq;
    record["time"] = time_micros;
    record["event"] = event.event;
    record["gateway"] = event.gateway;
    record["agent"] = event.agent;
    record["actor"] = event.actor;
    record["subject"] = event.subject;
    record["details"] = event.details;
    return record.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

Hash chain_hash(const Hash& previous, std::string_view canonical_text) {
    // Fetched once: EVP_sha256() makes OpenSSL 3 look the implementation up
    // again at every EVP_DigestInit_ex, and this runs per proxied request.
    static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> sha256(EVP_MD_fetch(nullptr, "SHA256", nullptr),
                                                                        EVP_MD_free);
    const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (sha256 == nullptr || context == nullptr) throw StoreError("cannot set up SHA-256 to hash the audit chain");
    Hash out{};
    const bool ok = EVP_DigestInit_ex(context.get(), sha256.get(), nullptr) == 1 &&
                    EVP_DigestUpdate(context.get(), previous.data(), previous.size()) == 1 &&
                    EVP_DigestUpdate(context.get(), canonical_text.data(), canonical_text.size()) == 1 &&
                    EVP_DigestFinal_ex(context.get(), out.data(), nullptr) == 1;
    if (!ok) throw StoreError("SHA-256 failed while hashing the audit chain");
    return out;
}

Hash checkpoint_mac(const vault::VaultKey& key, std::int64_t seq, const Hash& hash, std::int64_t time_micros) {
    std::string message(kCheckpointLabel);
    put_be64(message, seq);
    message.append(reinterpret_cast<const char*>(hash.data()), hash.size());
    put_be64(message, time_micros);
    Hash mac{};
    std::size_t length = 0;
    if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), vault::VaultKey::kSize,
                  reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(), mac.size(),
                  &length) == nullptr ||
        length != mac.size()) {
        throw StoreError("HMAC-SHA256 failed while signing an audit checkpoint");
    }
    return mac;
}

// ---------------------------------------------------------------------------
// AuditChain

AuditChain::AuditChain(Database& db) {
    reload(db);
}

void AuditChain::reload(Database& db) {
    seq_ = 0;
    hash_ = Hash{};
    auto head = db.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
    if (head.step()) {
        seq_ = head.integer(0);
        hash_ = to_hash(head.blob(1));
    } else {
        auto anchor = db.prepare(
            "SELECT (SELECT value FROM meta WHERE name = 'audit_anchor_seq'), "
            "(SELECT value FROM meta WHERE name = 'audit_anchor_hash')");
        if (anchor.step() && !anchor.is_null(0)) {
            seq_ = std::stoll(anchor.text(0));
            const auto hex = anchor.text(1);
            for (std::size_t i = 0; i < hash_.size() && 2 * i + 1 < hex.size(); ++i) {
                hash_[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
            }
        }
    }
    auto last =
        db.prepare("SELECT count(*) FROM audit WHERE seq > coalesce((SELECT max(seq) FROM audit_checkpoints), 0)");
    if (last.step()) since_checkpoint_ = static_cast<std::uint64_t>(last.integer(0));
    save();
}

void AuditChain::append(Database& db, const AuditEvent& event) {
    if (!insert_) {
        insert_.emplace(
            db.prepare("INSERT INTO audit (seq, time, event, gateway, agent, actor, subject, details, prev_hash, hash) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    }
    const std::int64_t seq = seq_ + 1;
    const auto time = std::chrono::duration_cast<std::chrono::microseconds>(event.time.time_since_epoch()).count();
    // An event without details is stored, and so hashed, with "{}". Copied
    // only then: this runs once or twice per proxied request.
    std::optional<AuditEvent> filled;
    if (event.details.empty()) {
        filled = event;
        filled->details = "{}";
    }
    const AuditEvent& stored = filled ? *filled : event;
    const Hash hash = chain_hash(hash_, canonical(seq, time, stored));
    // Borrowed: `stored`, hash_ and hash outlive the run.
    insert_->bind(1, seq)
        .bind(2, time)
        .bind_borrowed(3, stored.event)
        .bind_borrowed(4, stored.gateway)
        .bind_borrowed(5, stored.agent)
        .bind_borrowed(6, stored.actor)
        .bind_borrowed(7, stored.subject)
        .bind_borrowed(8, stored.details)
        .bind_blob_borrowed(9, hash_.data(), hash_.size())
        .bind_blob_borrowed(10, hash.data(), hash.size());
    insert_->run();
    seq_ = seq;
    hash_ = hash;
    ++since_checkpoint_;
}

void AuditChain::checkpoint(Database& db, const vault::VaultKey& key) {
    if (since_checkpoint_ == 0 || seq_ == 0) return;
    const auto time =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    const Hash mac = checkpoint_mac(key, seq_, hash_, time);
    auto insert =
        db.prepare("INSERT OR REPLACE INTO audit_checkpoints (seq, hash, time, key_id, mac) VALUES (?, ?, ?, ?, ?)");
    insert.bind(1, seq_)
        .bind_blob(2, hash_.data(), hash_.size())
        .bind(3, time)
        .bind_blob(4, key.id().data(), key.id().size())
        .bind_blob(5, mac.data(), mac.size());
    insert.run();
    since_checkpoint_ = 0;
}

void AuditChain::save() {
    saved_seq_ = seq_;
    saved_hash_ = hash_;
    saved_since_ = since_checkpoint_;
}

void AuditChain::restore() {
    seq_ = saved_seq_;
    hash_ = saved_hash_;
    since_checkpoint_ = saved_since_;
}

// ---------------------------------------------------------------------------
// Verification

// One piece over 100 lines: one pass over the chain whose running state (the previous hash, the key, the
// counts) every check reads and updates.
// NOLINTNEXTLINE(readability-function-size)
VerifyReport verify_audit(Database& db, const vault::VaultKey* key) {
    VerifyReport report;
    auto fail = [&report](std::int64_t seq, std::string problem) {
        report.ok = false;
        report.broken_seq = seq;
        report.problem = std::move(problem);
        return report;
    };

    struct Checkpoint {
        Hash hash;
        std::int64_t time;
        std::string key_id;
        Hash mac;
    };
    std::map<std::int64_t, Checkpoint> checkpoints;
    {
        auto rows = db.prepare("SELECT seq, hash, time, key_id, mac FROM audit_checkpoints ORDER BY seq");
        while (rows.step()) {
            checkpoints[rows.integer(0)] =
                Checkpoint{to_hash(rows.blob(1)), rows.integer(2), rows.blob(3), to_hash(rows.blob(4))};
        }
    }
    // Records removed by retention leave an anchor: the seq and hash of the
    // last removed record, also stated by the chained retention event.
    std::optional<std::int64_t> anchor_seq;
    std::string anchor_hex;
    {
        auto rows = db.prepare(
            "SELECT (SELECT value FROM meta WHERE name = 'audit_anchor_seq'), "
            "(SELECT value FROM meta WHERE name = 'audit_anchor_hash')");
        if (rows.step() && !rows.is_null(0)) {
            anchor_seq = std::stoll(rows.text(0));
            anchor_hex = rows.text(1);
        }
    }

    std::int64_t previous_seq = anchor_seq.value_or(0);
    std::string previous_hex = anchor_seq ? anchor_hex : to_hex(Hash{});
    bool anchor_claimed = !anchor_seq.has_value();
    auto rows = db.prepare(
        "SELECT seq, time, event, gateway, agent, actor, subject, details, prev_hash, hash FROM audit ORDER BY seq");
    while (rows.step()) {
        const std::int64_t seq = rows.integer(0);
        AuditEvent event;
        const std::int64_t time = rows.integer(1);
        event.event = rows.text(2);
        event.gateway = rows.text(3);
        event.agent = rows.text(4);
        event.actor = rows.text(5);
        event.subject = rows.text(6);
        event.details = rows.text(7);
        const std::string prev_blob = rows.blob(8);
        const Hash stored = to_hash(rows.blob(9));
        if (report.records == 0) report.first_seq = seq;

        if (seq != previous_seq + 1) {
            if (report.records == 0 && !anchor_seq) {
                return fail(previous_seq + 1,
                            "records " + std::to_string(previous_seq + 1) + " to " + std::to_string(seq - 1) +
                                " are missing: the log was cut at its start without a retention record");
            }
            return fail(previous_seq + 1, "record " + std::to_string(previous_seq + 1) +
                                              (seq - previous_seq > 2 ? " to " + std::to_string(seq - 1) : "") +
                                              " missing: deleted after it was written");
        }
        if (to_hex(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(prev_blob.data()),
                                                 prev_blob.size())) != previous_hex) {
            return fail(seq, "record " + std::to_string(seq) + " does not follow record " +
                                 std::to_string(previous_seq) +
                                 ": one of them was changed, or records were inserted, removed or reordered here");
        }
        const Hash expected = chain_hash(to_hash(prev_blob), canonical(seq, time, event));
        if (expected != stored) {
            return fail(seq, "record " + std::to_string(seq) +
                                 " was changed after it was written (its hash does not match its contents)");
        }
        if (const auto found = checkpoints.find(seq); found != checkpoints.end()) {
            if (found->second.hash != stored) {
                return fail(seq, "record " + std::to_string(seq) +
                                     " differs from the signed checkpoint at that position: the chain was rewritten");
            }
            if (key != nullptr && found->second.key_id.size() == key->id().size() &&
                std::memcmp(found->second.key_id.data(), key->id().data(), key->id().size()) == 0) {
                if (checkpoint_mac(*key, seq, found->second.hash, found->second.time) != found->second.mac) {
                    return fail(seq, "the checkpoint at record " + std::to_string(seq) +
                                         " has a wrong signature: it was forged or changed");
                }
                ++report.checkpoints;
            } else {
                ++report.unsigned_checkpoints;
            }
            report.after_last_checkpoint = 0;
        } else {
            ++report.after_last_checkpoint;
        }
        if (anchor_seq && event.event == "retention.applied") {
            const auto details = nlohmann::json::parse(event.details, nullptr, false);
            if (details.is_object() && details.value("audit_pruned_through", std::int64_t{-1}) == *anchor_seq &&
                details.value("anchor_hash", std::string()) == anchor_hex) {
                anchor_claimed = true;
            }
        }
        previous_seq = seq;
        previous_hex = to_hex(stored);
        ++report.records;
        report.last_seq = seq;
    }
    if (report.records == 0 && anchor_seq) report.first_seq = *anchor_seq + 1;
    if (!anchor_claimed) {
        return fail(report.first_seq, "records before " + std::to_string(report.first_seq) +
                                          " were removed, but no retention record in the chain says so");
    }
    if (!checkpoints.empty() && checkpoints.rbegin()->first > previous_seq) {
        return fail(previous_seq + 1, "records after " + std::to_string(previous_seq) +
                                          " were deleted: a signed checkpoint covers record " +
                                          std::to_string(checkpoints.rbegin()->first));
    }
    return report;
}

}  // namespace tameflare::store
