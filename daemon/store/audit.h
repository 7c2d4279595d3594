// The audit log's hash chain. Each record's hash is SHA-256 over the previous
// record's hash and the record's canonical encoding (JSON with sorted keys,
// its sequence number included), so editing, deleting, inserting or
// reordering any record breaks every link after it. Checkpoints sign the
// chain's head with a key the daemon holds (HMAC-SHA256): rewriting the whole
// chain from some point on is caught at the next checkpoint.
#pragma once

#include "daemon/store/database.h"
#include "daemon/vault/vault_crypto.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tameflare::store {

using Hash = std::array<std::uint8_t, 32>;

struct AuditEvent {
    std::chrono::system_clock::time_point time;
    std::string event;    // "action.allowed", "kill_switch.activated", ...
    std::string gateway;  // empty when not about one gateway
    std::string agent;
    std::string actor;    // who caused it: "tameflared", "uid:1000 pid:42 ...", "agent"
    std::string subject;  // request id, approval id, credential name, ...
    std::string details;  // a JSON object, as text
};

// The encoding hashed for record `seq`: a JSON object with sorted keys.
std::string canonical(std::int64_t seq, std::int64_t time_micros, const AuditEvent& event);
Hash chain_hash(const Hash& previous, std::string_view canonical);
std::string to_hex(std::span<const std::uint8_t> bytes);

// Appends records inside the caller's transaction; the writer owns one.
class AuditChain {
public:
    // Loads the chain's head (the last record's seq and hash).
    explicit AuditChain(Database& db);
    // Re-reads the head, for when another process appended (tf vault set
    // while the daemon runs). Call inside the transaction that appends.
    void reload(Database& db);
    void append(Database& db, const AuditEvent& event);
    // Signs the head (no-op when nothing was appended since the last one).
    void checkpoint(Database& db, const vault::VaultKey& key);
    // Undo appends after a rolled-back transaction.
    void save();
    void restore();
    // The head as a value, for undoing one operation inside a transaction.
    struct Head {
        std::int64_t seq;
        Hash hash;
        std::uint64_t since_checkpoint;
    };
    [[nodiscard]] Head head() const { return {seq_, hash_, since_checkpoint_}; }
    void reset_to(const Head& head) {
        seq_ = head.seq;
        hash_ = head.hash;
        since_checkpoint_ = head.since_checkpoint;
    }

    [[nodiscard]] std::int64_t head_seq() const { return seq_; }
    [[nodiscard]] const Hash& head_hash() const { return hash_; }
    [[nodiscard]] std::uint64_t since_checkpoint() const { return since_checkpoint_; }

private:
    std::int64_t seq_ = 0;
    Hash hash_{};
    std::uint64_t since_checkpoint_ = 0;
    std::int64_t saved_seq_ = 0;
    Hash saved_hash_{};
    std::uint64_t saved_since_ = 0;
    std::optional<Statement> insert_;
};

struct VerifyReport {
    bool ok = true;
    std::uint64_t records = 0;
    std::int64_t first_seq = 0;
    std::int64_t last_seq = 0;
    std::uint64_t checkpoints = 0;            // checkpoints whose hash and signature were checked
    std::uint64_t unsigned_checkpoints = 0;   // checkpoints whose signature could not be checked (no key)
    std::uint64_t after_last_checkpoint = 0;  // records not yet covered by a checkpoint
    std::int64_t broken_seq = 0;              // the first record that fails, when !ok
    std::string problem;                      // what is wrong there
};

// Walks the whole chain. `key` checks the checkpoint signatures; without it
// only their hashes are compared.
VerifyReport verify_audit(Database& db, const vault::VaultKey* key);

// The MAC a checkpoint carries.
Hash checkpoint_mac(const vault::VaultKey& key, std::int64_t seq, const Hash& hash, std::int64_t time_micros);

}  // namespace tameflare::store
