// Everything tameflared remembers, in one SQLite database (WAL): the traffic
// log, the hash-chained audit log, the vault's sealed values, approvals, the
// agent registry and the runtime state that must survive a restart.
//
// Writes go through one writer thread with group commit: whatever is queued
// while a transaction commits goes into the next one, so many requests share
// one fsync. commit() calls back once its rows are durable; the proxy waits
// for that before it forwards a request, so a forwarded request always has
// its row, even after kill -9. Nothing here blocks a caller on disk except
// the calls documented as blocking (control operations, not the data path).
#pragma once

#include "daemon/store/audit.h"
#include "daemon/store/database.h"
#include "daemon/vault/vault_crypto.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::store {

using Clock = std::chrono::system_clock;

// One row of the traffic log: metadata only, never a body or a secret.
struct TrafficRow {
    Clock::time_point time;
    std::string request_id;
    std::string gateway;
    std::string agent;
    std::string connector;
    std::string action;
    std::string method;
    std::string host;
    std::string path;
    std::string decision;
    std::string reason;
    unsigned status = 0;
    std::uint64_t request_bytes = 0;
    std::uint64_t response_bytes = 0;
    std::chrono::microseconds latency{0};
    bool forwarded = false;
    bool completed = true;  // false: written before the forward, outcome not yet known
};

struct Retention {
    std::chrono::seconds max_age{0};  // 0: keep by age forever
    std::uint64_t max_bytes = 0;      // 0: no size limit
    std::chrono::seconds interval{3600};
};

struct StoreOptions {
    std::filesystem::path database;
    // normal: a committed write survives a crash of the daemon (kill -9);
    // full: also a crash of the machine, at one fsync per group commit.
    Database::Sync sync = Database::Sync::normal;
    // Signs a checkpoint of the audit chain's head (HMAC-SHA256), so a
    // rewritten chain cannot be passed off as the original. Optional.
    std::optional<vault::VaultKey> checkpoint_key;
    std::chrono::milliseconds checkpoint_interval{1000};
    std::uint64_t checkpoint_records = 10000;
    Retention retention;
    std::size_t max_batch = 8192;
    // A checkpoint (copying the write-ahead log into the database, two
    // fsyncs) starts when the log holds this many pages (4 KiB each). Each
    // briefly holds commits back at its end; fewer, larger ones keep that
    // pause away from all but one request in thousands.
    std::size_t wal_checkpoint_pages = 10000;
    // How long writes nobody waits for (a request's final record, audit
    // events) may wait for a write someone does wait for, to share its
    // transaction. 0: commit them at once.
    std::chrono::microseconds linger{2000};
    // Beyond this many queued writes, commit() is refused at once (the proxy
    // then refuses the request: fail closed) instead of queueing more.
    std::size_t max_queue = 100000;
};

struct ApprovalRow {
    std::string id;
    std::string gateway;
    std::string agent;
    std::string connector;
    std::string action;
    std::string risk;
    std::string parameters;  // JSON text
    std::string reason;
    Clock::time_point requested;
    std::chrono::seconds timeout{0};
};

struct AgentRow {
    std::string id;
    std::string gateway;
    std::string name;
    unsigned uid = 0;
    int pid = 0;
    std::string command;
    Clock::time_point started;
};

// Called once, on the writer thread: empty when durable, else why not.
using Done = std::function<void(const std::string& error)>;

struct StoreCounters {
    std::uint64_t committed_writes = 0;
    std::uint64_t transactions = 0;
    std::uint64_t failed_transactions = 0;
    std::uint64_t lost_writes = 0;  // given up after the retry queue overflowed
    std::uint64_t queued = 0;
    std::uint64_t wal_checkpoints = 0;  // each ends with the log copied whole
};

class Store {
public:
    // Opens (creating or migrating) the database; throws StoreError.
    static std::unique_ptr<Store> open(StoreOptions options);
    ~Store();  // commits what is queued, writes a checkpoint, stops the writer
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    // --- the data path (never blocks) -------------------------------------
    // Durable before `done`: the row (and its audit events) are committed.
    void commit(TrafficRow row, std::vector<AuditEvent> events, Done done);
    // Queued; a failure is retried, then logged.
    void record(TrafficRow row, std::vector<AuditEvent> events);
    void audit(AuditEvent event, Done done = {});
    // Any other write, queued into the next transaction (retried on failure).
    void later(std::function<void(Database&, AuditChain&)> work);

    // --- blocking helpers (control operations, tests) ---------------------
    // Waits until everything queued before the call is committed or failed.
    void flush();
    // Runs `work` inside the writer's next transaction and waits for it;
    // rethrows what `work` threw. Audit events appended by `work` via the
    // chain share its transaction.
    void write(const std::function<void(Database&, AuditChain&)>& work);

    // Runtime state that survives restarts (the kill switch): a JSON value.
    std::optional<std::string> state(const std::string& name);
    void set_state(const std::string& name, const std::string& json, AuditEvent event);

    // Approvals: recorded when held, updated when answered.
    void approval_requested(const ApprovalRow& row);
    void approval_answered(const std::string& id, const std::string& state, const std::string& note, AuditEvent event);
    // At start: every approval still pending belonged to a connection that is
    // gone; each is marked expired with an audit event. Returns how many.
    std::size_t expire_pending_approvals(const std::string& why);

    // Agents that ran under a gateway.
    void agent_started(const AgentRow& row);
    void agent_exited(const std::string& id, int exit_code);

    // Retention now (it also runs in the background every retention.interval).
    struct RetentionResult {
        std::uint64_t traffic_deleted = 0;
        std::uint64_t audit_deleted = 0;
    };
    RetentionResult apply_retention();

    // A second connection for readers on the calling thread (queries,
    // exports, verification); it sees every committed write.
    Database reader() const;

    [[nodiscard]] StoreCounters counters() const;
    // Non-empty while the last transaction failed (disk full, I/O error).
    [[nodiscard]] std::string health() const;
    [[nodiscard]] const std::filesystem::path& path() const;

private:
    struct Impl;
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

std::int64_t to_micros(Clock::time_point time);
Clock::time_point from_micros(std::int64_t micros);

}  // namespace tameflare::store
