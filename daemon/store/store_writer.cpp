// The writer thread: group commit (one transaction for whatever is queued),
// retries after a failed transaction, signed audit checkpoints; and the
// checkpointer thread that copies the write-ahead log into the database.
#include "daemon/store/store_internal.h"

#include "common/log.h"

#include <sqlite3.h>

#include <exception>

namespace tameflare::store {

using detail::Op;

namespace {

constexpr const char* kTrafficUpsert =
    "INSERT INTO traffic (request_id, time, gateway, agent, connector, action, method, host, path, decision, "
    "reason, status, request_bytes, response_bytes, latency_us, forwarded, completed) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) "
    "ON CONFLICT (request_id) DO UPDATE SET connector = ?5, action = ?6, decision = ?10, reason = ?11, "
    "status = ?12, request_bytes = ?13, response_bytes = ?14, latency_us = ?15, "
    "forwarded = ?16, completed = ?17";

}  // namespace

int Store::Impl::wal_hook(void* self, sqlite3* /*db*/, const char* /*name*/, int pages) {
    auto* impl = static_cast<Impl*>(self);
    if (static_cast<std::size_t>(pages) >= impl->options.wal_checkpoint_pages) {
        std::lock_guard lock(impl->checkpoint_mutex);
        impl->checkpoint_wanted = true;
        impl->checkpoint_wake.notify_one();
    }
    return SQLITE_OK;
}

void Store::Impl::run_checkpoints() {
    std::optional<Database> own;
    try {
        own.emplace(Database::open(options.database, Database::Mode::read_write, options.sync));
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("store: no checkpoint connection: ") + error.what(),
            {{"DATABASE", options.database.string()}});
        return;
    }
    std::unique_lock lock(checkpoint_mutex);
    while (!checkpoint_stopping) {
        checkpoint_wake.wait_for(lock, std::chrono::seconds(5),
                                 [&] { return checkpoint_wanted || checkpoint_stopping; });
        if (checkpoint_stopping) break;
        checkpoint_wanted = false;
        lock.unlock();
        sqlite3_wal_checkpoint_v2(own->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        {
            // SQLite starts the log over only at a write that begins after
            // a checkpoint copied every frame. Under steady traffic a
            // commit always lands while the pass above syncs, so the log
            // would grow without end (and be copied again and again).
            // The frames written meanwhile are copied with our writers
            // held back; the next commit then starts the log over.
            std::lock_guard writers(db_mutex);
            sqlite3_wal_checkpoint_v2(own->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
            std::lock_guard counted(mutex);
            ++counters.wal_checkpoints;
        }
        lock.lock();
        // The commits that asked for a checkpoint meanwhile were copied too.
        checkpoint_wanted = false;
    }
    lock.unlock();
    sqlite3_wal_checkpoint_v2(own->handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

void Store::Impl::enqueue(Op op, bool refuse_when_behind) {
    std::unique_lock lock(mutex);
    if (refuse_when_behind && (!health.empty() || queue.size() >= options.max_queue)) {
        const std::string why =
            !health.empty() ? health
                            : "the store is " + std::to_string(queue.size()) + " writes behind; refusing to add more";
        lock.unlock();
        if (op.done) op.done(why);
        return;
    }
    const bool waited = static_cast<bool>(op.done) || static_cast<bool>(op.alone);
    if (waited) ++waiters;
    queue.push_back(std::move(op));
    counters.queued = queue.size();
    if (queue.size() == 1 || waited) wake.notify_one();
}

void Store::Impl::write_traffic(Database& database, const TrafficRow& row) {
    if (!traffic_upsert) traffic_upsert.emplace(database.prepare(kTrafficUpsert));
    // Borrowed: `row` outlives the run.
    traffic_upsert->bind_borrowed(1, row.request_id)
        .bind(2, to_micros(row.time))
        .bind_borrowed(3, row.gateway)
        .bind_borrowed(4, row.agent)
        .bind_borrowed(5, row.connector)
        .bind_borrowed(6, row.action)
        .bind_borrowed(7, row.method)
        .bind_borrowed(8, row.host)
        .bind_borrowed(9, row.path)
        .bind_borrowed(10, row.decision)
        .bind_borrowed(11, row.reason)
        .bind(12, static_cast<std::int64_t>(row.status))
        .bind(13, static_cast<std::int64_t>(row.request_bytes))
        .bind(14, static_cast<std::int64_t>(row.response_bytes))
        .bind(15, static_cast<std::int64_t>(row.latency.count()))
        .bind(16, std::int64_t{row.forwarded ? 1 : 0})
        .bind(17, std::int64_t{row.completed ? 1 : 0});
    traffic_upsert->run();
}

void Store::Impl::follow_other_writers() {
    if (!data_version) data_version.emplace(db.prepare("PRAGMA data_version"));
    data_version->step();
    const auto version = data_version->integer(0);
    data_version->reset();
    if (seen_version != -1 && version != seen_version) chain.reload(db);
    seen_version = version;
}

bool Store::Impl::checkpoint_due() const {
    if (!options.checkpoint_key || chain.since_checkpoint() == 0) return false;
    if (force_checkpoint) return true;
    return chain.since_checkpoint() >= options.checkpoint_records ||
           std::chrono::steady_clock::now() - last_checkpoint >= options.checkpoint_interval;
}

// Runs every op of `batch` in the current transaction. Fast path: no
// savepoints. Careful path: each op is atomic (a failed one leaves
// neither rows nor an advanced chain head behind) and fails alone.
void Store::Impl::apply_batch(std::vector<Op>& batch, std::vector<std::string>& errors, bool careful) {
    if (careful && !savepoint) {
        savepoint.emplace(db.prepare("SAVEPOINT op"));
        release.emplace(db.prepare("RELEASE op"));
        rollback.emplace(db.prepare("ROLLBACK TO op"));
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto head = chain.head();
        if (careful) savepoint->run();
        try {
            batch[i].apply(db, chain);
            if (careful) release->run();
        } catch (const StoreFullError&) {
            throw;
        } catch (const StoreError& error) {
            if (!careful) throw OperationFailed{};
            errors[i] = error.what();
            rollback->run();
            release->run();
            chain.reset_to(head);
        }
    }
}

// One transaction for the whole batch. A statement that fails on its own
// (a constraint) fails only its op; a failure of the transaction (disk
// full, I/O) fails them all, and those that must not be lost are retried.
void Store::Impl::commit_batch(std::vector<Op>& batch) {
    std::vector<std::string> errors(batch.size());
    chain.save();
    std::string failure;
    for (bool careful : {false, true}) {
        failure.clear();
        try {
            Transaction transaction(db);
            follow_other_writers();
            apply_batch(batch, errors, careful);
            const bool checkpoint = checkpoint_due();
            if (checkpoint) chain.checkpoint(db, *options.checkpoint_key);
            transaction.commit();
            if (checkpoint) last_checkpoint = std::chrono::steady_clock::now();
            break;
        } catch (const OperationFailed&) {
            chain.restore();  // rolled back by the transaction's destructor; run again, carefully
            traffic_upsert.reset();
            continue;
        } catch (const std::exception& error) {
            failure = error.what();
            break;
        }
    }
    if (!failure.empty()) {
        chain.restore();
        traffic_upsert.reset();
        savepoint.reset();
        release.reset();
        rollback.reset();
        std::size_t lost = 0;
        {
            std::lock_guard lock(mutex);
            if (health.empty()) {
                log(LogLevel::error, "store: cannot commit, refusing forwards until it can: " + failure,
                    {{"DATABASE", options.database.string()}});
            }
            health = failure;
            ++counters.failed_transactions;
            for (auto& op : batch) {
                if (!op.retry) continue;
                if (retry.size() < options.max_queue) {
                    retry.push_back(Op{std::move(op.apply), {}, true});
                } else {
                    ++lost;
                }
            }
            counters.lost_writes += lost;
            retry_at = Clock::now() + std::chrono::seconds(1);
            // Whoever waits for a write queued meanwhile learns now, not
            // after the disk has room again: the proxy refuses at once, a
            // control operation reports the error. Other writes stay queued.
            for (auto it = queue.begin(); it != queue.end();) {
                if (it->done && !it->alone) {
                    waiting_failed.push_back(std::move(it->done));
                    --waiters;
                    it = queue.erase(it);
                } else {
                    ++it;
                }
            }
            counters.queued = queue.size();
        }
        for (auto& done : waiting_failed) done(failure);
        waiting_failed.clear();
        if (lost > 0) {
            log(LogLevel::error, "store: " + std::to_string(lost) + " records lost: the retry queue is full",
                {{"DATABASE", options.database.string()}});
        }
        for (auto& op : batch) {
            if (op.done) op.done(failure);
        }
        return;
    }
    {
        std::lock_guard lock(mutex);
        if (!health.empty()) {
            log(LogLevel::notice, "store: writing again", {{"DATABASE", options.database.string()}});
        }
        health.clear();
        counters.committed_writes += batch.size();
        ++counters.transactions;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].done) batch[i].done(errors[i]);
    }
}

void Store::Impl::run() {
    std::vector<Op> batch;
    batch.reserve(options.max_batch);
    while (true) {
        std::unique_lock db_lock(db_mutex, std::defer_lock);
        {
            std::unique_lock lock(mutex);
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
            wake.wait_until(lock, deadline,
                            [&] { return stopping || !queue.empty() || (!retry.empty() && Clock::now() >= retry_at); });
            // Writes nobody waits for (a request's final record, audit
            // events) wait up to options.linger for company: they then share the
            // transaction of the next request's commit instead of making
            // that commit queue behind a transaction of their own.
            if (options.linger.count() > 0 && !stopping && waiters == 0 && !queue.empty() &&
                queue.size() < options.max_batch / 2) {
                wake.wait_for(lock, options.linger,
                              [&] { return stopping || waiters > 0 || queue.size() >= options.max_batch / 2; });
            }
            lock.unlock();
            db_lock.lock();
            lock.lock();
            if (!retry.empty() && (Clock::now() >= retry_at || stopping)) {
                while (!retry.empty() && batch.size() < options.max_batch) {
                    batch.push_back(std::move(retry.front()));
                    retry.pop_front();
                }
            }
            // While retrying after a failure, new writes wait behind the
            // retried ones so order is kept.
            if (retry.empty() || stopping) {
                while (!queue.empty() && batch.size() < options.max_batch) {
                    if (queue.front().alone && !batch.empty()) break;
                    batch.push_back(std::move(queue.front()));
                    queue.pop_front();
                    if (batch.back().done || batch.back().alone) --waiters;
                    if (batch.back().alone) break;
                }
            }
            counters.queued = queue.size();
            if (stopping && batch.empty() && queue.empty()) break;
        }
        if (!batch.empty() && batch.back().alone) {
            std::string error;
            try {
                batch.back().alone();
            } catch (const std::exception& thrown) {
                error = thrown.what();
            }
            if (batch.back().done) batch.back().done(error);
        } else if (!batch.empty()) {
            commit_batch(batch);
        }
        const bool failed_while_stopping = [&] {
            std::lock_guard lock(mutex);
            return stopping && !health.empty();
        }();
        batch.clear();
        if (failed_while_stopping) {
            // One last attempt was made; give up on what cannot be written.
            std::lock_guard lock(mutex);
            counters.lost_writes += retry.size();
            retry.clear();
            for (auto& op : queue) {
                if (op.done) op.done(health);
            }
            counters.lost_writes += queue.size();
            queue.clear();
            waiters = 0;
            break;
        }
        if (checkpoint_due()) {
            std::vector<Op> none;
            commit_batch(none);
        }
        if (std::chrono::steady_clock::now() >= next_retention) {
            next_retention = std::chrono::steady_clock::now() + options.retention.interval;
            if (options.retention.max_age.count() > 0 || options.retention.max_bytes > 0) {
                try {
                    retention();
                } catch (const std::exception& error) {
                    log(LogLevel::error, std::string("store: retention failed: ") + error.what(),
                        {{"DATABASE", options.database.string()}});
                }
            }
        }
    }
    if (options.checkpoint_key && chain.since_checkpoint() > 0) {
        force_checkpoint = true;
        std::vector<Op> none;
        commit_batch(none);
    }
}

}  // namespace tameflare::store
