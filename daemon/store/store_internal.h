// The store's insides, shared by its files and by nothing else: store.cpp
// (the Store's calls: each queues its work for the writer, or reads on a
// connection of its own), store_writer.cpp (the writer thread's group commit
// and the WAL checkpointer) and store_retention.cpp (pruning old rows and
// audit records). Not a public header: include daemon/store/store.h.
#pragma once

#include "daemon/store/store.h"

#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tameflare::store {

namespace detail {

using Apply = std::function<void(Database&, AuditChain&)>;

struct Op {
    Apply apply;
    Done done;           // may be empty
    bool retry = false;  // kept and retried when the transaction fails
    // Set for work that runs alone, between transactions (retention).
    std::function<void()> alone;
};

}  // namespace detail

struct Store::Impl {
    StoreOptions options;
    Database db;
    AuditChain chain;
    std::optional<Statement> traffic_upsert;

    mutable std::mutex mutex;
    std::condition_variable wake;
    std::deque<detail::Op> queue;
    std::size_t waiters = 0;  // ops in `queue` that someone waits for
    std::deque<detail::Op> retry;
    bool stopping = false;
    std::string health;  // guarded by mutex
    StoreCounters counters;
    Clock::time_point retry_at{};
    std::chrono::steady_clock::time_point last_checkpoint = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point next_retention = std::chrono::steady_clock::now();
    std::thread writer;
    // Held by the writer thread while it writes, and by the checkpointer
    // while it holds writers back. Taken before `mutex`, never after it.
    std::mutex db_mutex;

    // WAL checkpoints (copying the log back into the database, with their
    // fsyncs) run on their own thread and connection, so a commit never
    // waits for one. The writer's WAL hook wakes it.
    std::mutex checkpoint_mutex;
    std::condition_variable checkpoint_wake;
    bool checkpoint_wanted = false;
    bool checkpoint_stopping = false;
    std::thread checkpointer;

    static int wal_hook(void* self, sqlite3* /*db*/, const char* /*name*/, int pages);
    void run_checkpoints();

    Impl(StoreOptions o, Database d) : options(std::move(o)), db(std::move(d)), chain(db) {}

    void enqueue(detail::Op op, bool refuse_when_behind);
    void write_traffic(Database& database, const TrafficRow& row);

    bool force_checkpoint = false;  // at shutdown: sign whatever is unsigned

    // Another process (tf vault set) may have appended to the chain since our
    // last transaction: PRAGMA data_version changes exactly then. Called with
    // the write lock held (after BEGIN IMMEDIATE), so nobody can append
    // between the check and our own appends.
    std::optional<Statement> savepoint, release, rollback;
    std::vector<Done> waiting_failed;  // writer thread only
    std::optional<Statement> data_version;
    std::int64_t seen_version = -1;
    void follow_other_writers();

    bool checkpoint_due() const;

    // Thrown out of a fast-path batch when one operation failed on its own:
    // the batch is then run again with each operation in a savepoint.
    struct OperationFailed {};

    void apply_batch(std::vector<detail::Op>& batch, std::vector<std::string>& errors, bool careful);
    void commit_batch(std::vector<detail::Op>& batch);
    void run();

    using RetentionResult = Store::RetentionResult;
    RetentionResult prune_before(std::int64_t cutoff, const std::string& why);
    std::int64_t sqlite3_changes_count();
    std::uint64_t used_bytes();
    RetentionResult retention();
};

}  // namespace tameflare::store
