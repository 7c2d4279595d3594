#include "daemon/store/store.h"

#include "common/log.h"

#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>

namespace tameflare::store {

std::int64_t to_micros(Clock::time_point time) {
    return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

Clock::time_point from_micros(std::int64_t micros) {
    return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(micros)));
}

namespace {

using Apply = std::function<void(Database&, AuditChain&)>;

struct Op {
    Apply apply;
    Done done;           // may be empty
    bool retry = false;  // kept and retried when the transaction fails
    // Set for work that runs alone, between transactions (retention).
    std::function<void()> alone;
};

constexpr const char* kTrafficUpsert =
    "INSERT INTO traffic (request_id, time, gateway, agent, connector, action, method, host, path, decision, "
    "reason, status, request_bytes, response_bytes, latency_us, forwarded, completed) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) "
    "ON CONFLICT (request_id) DO UPDATE SET connector = ?5, action = ?6, decision = ?10, reason = ?11, "
    "status = ?12, request_bytes = ?13, response_bytes = ?14, latency_us = ?15, "
    "forwarded = ?16, completed = ?17";

}  // namespace

struct Store::Impl {
    StoreOptions options;
    Database db;
    AuditChain chain;
    std::optional<Statement> traffic_upsert;

    mutable std::mutex mutex;
    std::condition_variable wake;
    std::deque<Op> queue;
    std::size_t waiters = 0;  // ops in `queue` that someone waits for
    std::deque<Op> retry;
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

    static int wal_hook(void* self, sqlite3* /*db*/, const char* /*name*/, int pages) {
        auto* impl = static_cast<Impl*>(self);
        if (static_cast<std::size_t>(pages) >= impl->options.wal_checkpoint_pages) {
            std::lock_guard lock(impl->checkpoint_mutex);
            impl->checkpoint_wanted = true;
            impl->checkpoint_wake.notify_one();
        }
        return SQLITE_OK;
    }

    void run_checkpoints() {
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

    Impl(StoreOptions o, Database d) : options(std::move(o)), db(std::move(d)), chain(db) {}

    void enqueue(Op op, bool refuse_when_behind) {
        std::unique_lock lock(mutex);
        if (refuse_when_behind && (!health.empty() || queue.size() >= options.max_queue)) {
            const std::string why = !health.empty() ? health
                                                    : "the store is " + std::to_string(queue.size()) +
                                                          " writes behind; refusing to add more";
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

    void write_traffic(Database& database, const TrafficRow& row) {
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

    bool force_checkpoint = false;  // at shutdown: sign whatever is unsigned

    // Another process (tf vault set) may have appended to the chain since our
    // last transaction: PRAGMA data_version changes exactly then. Called with
    // the write lock held (after BEGIN IMMEDIATE), so nobody can append
    // between the check and our own appends.
    std::optional<Statement> savepoint, release, rollback;
    std::vector<Done> waiting_failed;  // writer thread only
    std::optional<Statement> data_version;
    std::int64_t seen_version = -1;
    void follow_other_writers() {
        if (!data_version) data_version.emplace(db.prepare("PRAGMA data_version"));
        data_version->step();
        const auto version = data_version->integer(0);
        data_version->reset();
        if (seen_version != -1 && version != seen_version) chain.reload(db);
        seen_version = version;
    }

    bool checkpoint_due() const {
        if (!options.checkpoint_key || chain.since_checkpoint() == 0) return false;
        if (force_checkpoint) return true;
        return chain.since_checkpoint() >= options.checkpoint_records ||
               std::chrono::steady_clock::now() - last_checkpoint >= options.checkpoint_interval;
    }

    // Thrown out of a fast-path batch when one operation failed on its own:
    // the batch is then run again with each operation in a savepoint.
    struct OperationFailed {};

    // Runs every op of `batch` in the current transaction. Fast path: no
    // savepoints. Careful path: each op is atomic (a failed one leaves
    // neither rows nor an advanced chain head behind) and fails alone.
    void apply_batch(std::vector<Op>& batch, std::vector<std::string>& errors, bool careful) {
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
    void commit_batch(std::vector<Op>& batch) {
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

    void run() {
        std::vector<Op> batch;
        batch.reserve(options.max_batch);
        while (true) {
            std::unique_lock db_lock(db_mutex, std::defer_lock);
            {
                std::unique_lock lock(mutex);
                const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
                wake.wait_until(lock, deadline, [&] {
                    return stopping || !queue.empty() || (!retry.empty() && Clock::now() >= retry_at);
                });
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

    // Removes everything older than `cutoff` (traffic rows and audit records),
    // leaving an anchor so the chain still verifies from its new start.
    using RetentionResult = Store::RetentionResult;
    RetentionResult prune_before(std::int64_t cutoff, const std::string& why) {
        RetentionResult result;
        chain.save();
        try {
            Transaction transaction(db);
            follow_other_writers();
            auto traffic = db.prepare("DELETE FROM traffic WHERE time < ?");
            traffic.bind(1, cutoff).run();
            result.traffic_deleted = static_cast<std::uint64_t>(sqlite3_changes_count());
            auto last = db.prepare("SELECT seq, hash FROM audit WHERE time < ? ORDER BY seq DESC LIMIT 1");
            last.bind(1, cutoff);
            nlohmann::json details = {{"reason", why}, {"cutoff_time", cutoff}};
            if (last.step()) {
                const std::int64_t through = last.integer(0);
                const std::string hash = last.blob(1);
                last.reset();
                const auto hex = to_hex(
                    std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(hash.data()), hash.size()));
                const std::int64_t first = db.scalar("SELECT coalesce(min(seq), 0) FROM audit");
                auto remove = db.prepare("DELETE FROM audit WHERE seq <= ?");
                remove.bind(1, through).run();
                result.audit_deleted = static_cast<std::uint64_t>(through - first + 1);
                auto checkpoints = db.prepare("DELETE FROM audit_checkpoints WHERE seq <= ?");
                checkpoints.bind(1, through).run();
                auto anchor = db.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)");
                anchor.bind(1, std::string_view("audit_anchor_seq")).bind(2, std::to_string(through)).run();
                anchor.bind(1, std::string_view("audit_anchor_hash")).bind(2, hex).run();
                details["audit_pruned_through"] = through;
                details["anchor_hash"] = hex;
            } else {
                last.reset();
            }
            details["traffic_deleted"] = result.traffic_deleted;
            details["audit_deleted"] = result.audit_deleted;
            if (result.traffic_deleted > 0 || result.audit_deleted > 0) {
                chain.append(db,
                             AuditEvent{Clock::now(), "retention.applied", "", "", "tameflared", "", details.dump()});
            }
            transaction.commit();
        } catch (...) {
            chain.restore();
            throw;
        }
        return result;
    }

    std::int64_t sqlite3_changes_count() { return db.scalar("SELECT changes()"); }

    std::uint64_t used_bytes() {
        return static_cast<std::uint64_t>(db.scalar("PRAGMA page_size")) *
               static_cast<std::uint64_t>(db.scalar("PRAGMA page_count") - db.scalar("PRAGMA freelist_count"));
    }

    RetentionResult retention() {
        RetentionResult total;
        auto add = [&total](const RetentionResult& r) {
            total.traffic_deleted += r.traffic_deleted;
            total.audit_deleted += r.audit_deleted;
        };
        if (options.retention.max_age.count() > 0) {
            const auto cutoff = to_micros(Clock::now() - options.retention.max_age);
            add(prune_before(cutoff, "age"));
        }
        if (options.retention.max_bytes > 0) {
            // Drop the oldest tenth at a time until the data fits.
            for (int round = 0; round < 20 && used_bytes() > options.retention.max_bytes; ++round) {
                const std::int64_t rows = db.scalar("SELECT count(*) FROM traffic");
                const char* table = rows > 0 ? "traffic" : "audit";
                const std::int64_t count = rows > 0 ? rows : db.scalar("SELECT count(*) FROM audit");
                if (count == 0) break;
                auto at = db.prepare(std::string("SELECT time FROM ") + table + " ORDER BY time LIMIT 1 OFFSET ?");
                at.bind(1, std::max<std::int64_t>(count / 10, 1));
                const std::int64_t cutoff = at.step() ? at.integer(0) : to_micros(Clock::now());
                at.reset();
                const auto result = prune_before(cutoff == 0 ? 1 : cutoff, "size");
                add(result);
                if (result.traffic_deleted == 0 && result.audit_deleted == 0) break;
            }
        }
        if (total.traffic_deleted > 0 || total.audit_deleted > 0) {
            db.exec("PRAGMA incremental_vacuum");
            log(LogLevel::notice,
                "store: retention removed " + std::to_string(total.traffic_deleted) + " traffic rows and " +
                    std::to_string(total.audit_deleted) + " audit records",
                {{"DATABASE", options.database.string()}});
        }
        return total;
    }
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<Store> Store::open(StoreOptions options) {
    auto db = Database::open(options.database, Database::Mode::read_write, options.sync);
    auto store = std::unique_ptr<Store>(new Store(std::make_unique<Impl>(std::move(options), std::move(db))));
    Impl* impl = store->impl_.get();
    impl->db.exec("PRAGMA wal_autocheckpoint=0");
    sqlite3_wal_hook(impl->db.handle(), &Impl::wal_hook, impl);
    impl->checkpointer = std::thread([impl] { impl->run_checkpoints(); });
    impl->writer = std::thread([impl] { impl->run(); });
    return store;
}

Store::~Store() {
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
    }
    impl_->wake.notify_one();
    impl_->writer.join();
    {
        std::lock_guard lock(impl_->checkpoint_mutex);
        impl_->checkpoint_stopping = true;
    }
    impl_->checkpoint_wake.notify_one();
    impl_->checkpointer.join();
}

void Store::commit(TrafficRow row, std::vector<AuditEvent> events, Done done) {
    row.completed = false;
    Impl* impl = impl_.get();
    impl_->enqueue(Op{[impl, row = std::move(row), events = std::move(events)](Database& db, AuditChain& chain) {
                          impl->write_traffic(db, row);
                          for (const auto& event : events) chain.append(db, event);
                      },
                      std::move(done), true},
                   true);
}

void Store::record(TrafficRow row, std::vector<AuditEvent> events) {
    Impl* impl = impl_.get();
    impl_->enqueue(Op{[impl, row = std::move(row), events = std::move(events)](Database& db, AuditChain& chain) {
                          impl->write_traffic(db, row);
                          for (const auto& event : events) chain.append(db, event);
                      },
                      {},
                      true},
                   false);
}

void Store::audit(AuditEvent event, Done done) {
    impl_->enqueue(Op{[event = std::move(event)](Database& db, AuditChain& chain) { chain.append(db, event); },
                      std::move(done), true},
                   false);
}

void Store::later(std::function<void(Database&, AuditChain&)> work) {
    impl_->enqueue(Op{std::move(work), {}, true}, false);
}

void Store::write(const std::function<void(Database&, AuditChain&)>& work) {
    std::promise<std::string> result;
    auto future = result.get_future();
    std::exception_ptr thrown;
    impl_->enqueue(Op{[&work, &thrown](Database& db, AuditChain& chain) {
                          try {
                              work(db, chain);
                          } catch (const StoreError&) {
                              throw;
                          } catch (...) {
                              // Rolled back like a store failure; the caller
                              // gets the original exception.
                              thrown = std::current_exception();
                              throw StoreError("the operation failed");
                          }
                      },
                      [&result](const std::string& error) { result.set_value(error); }, false},
                   false);
    const auto error = future.get();
    if (thrown) std::rethrow_exception(thrown);
    if (!error.empty()) throw StoreError(error);
}

void Store::flush() {
    write([](Database&, AuditChain&) {});
}

std::optional<std::string> Store::state(const std::string& name) {
    auto db = reader();
    auto row = db.prepare("SELECT value FROM runtime_state WHERE name = ?");
    row.bind(1, name);
    if (!row.step()) return std::nullopt;
    return row.text(0);
}

void Store::set_state(const std::string& name, const std::string& json, AuditEvent event) {
    write([&](Database& db, AuditChain& chain) {
        auto upsert = db.prepare("INSERT OR REPLACE INTO runtime_state (name, value, updated) VALUES (?, ?, ?)");
        upsert.bind(1, name).bind(2, json).bind(3, to_micros(Clock::now())).run();
        chain.append(db, event);
    });
}

void Store::approval_requested(const ApprovalRow& row) {
    impl_->enqueue(
        Op{[row](Database& db, AuditChain&) {
               auto insert = db.prepare(
                   "INSERT OR IGNORE INTO approvals (id, gateway, agent, connector, action, risk, parameters, "
                   "reason, requested, timeout_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')");
               insert.bind(1, row.id)
                   .bind(2, row.gateway)
                   .bind(3, row.agent)
                   .bind(4, row.connector)
                   .bind(5, row.action)
                   .bind(6, row.risk)
                   .bind(7, row.parameters)
                   .bind(8, row.reason)
                   .bind(9, to_micros(row.requested))
                   .bind(10, static_cast<std::int64_t>(row.timeout.count()))
                   .run();
           },
           {},
           true},
        false);
}

void Store::approval_answered(const std::string& id, const std::string& state, const std::string& note,
                              AuditEvent event) {
    impl_->enqueue(
        Op{[id, state, note, event = std::move(event)](Database& db, AuditChain& chain) {
               auto update = db.prepare(
                   "UPDATE approvals SET state = ?, answered = ?, note = ? WHERE id = ? AND state = 'pending'");
               update.bind(1, state).bind(2, to_micros(Clock::now())).bind(3, note).bind(4, id).run();
               chain.append(db, event);
           },
           {},
           true},
        false);
}

std::size_t Store::expire_pending_approvals(const std::string& why) {
    std::size_t expired = 0;
    write([&](Database& db, AuditChain& chain) {
        std::vector<std::tuple<std::string, std::string, std::string, std::string>> pending;
        {
            auto rows = db.prepare("SELECT id, gateway, agent, action FROM approvals WHERE state = 'pending'");
            while (rows.step()) pending.emplace_back(rows.text(0), rows.text(1), rows.text(2), rows.text(3));
        }
        auto update = db.prepare("UPDATE approvals SET state = 'expired', answered = ?, note = ? WHERE id = ?");
        for (const auto& [id, gateway, agent, action] : pending) {
            update.bind(1, to_micros(Clock::now())).bind(2, why).bind(3, id).run();
            const nlohmann::json details = {{"decision", "expired"}, {"action", action}, {"note", why}};
            chain.append(
                db, AuditEvent{Clock::now(), "approval.responded", gateway, agent, "tameflared", id, details.dump()});
        }
        expired = pending.size();
    });
    return expired;
}

void Store::agent_started(const AgentRow& row) {
    impl_->enqueue(Op{[row](Database& db, AuditChain& chain) {
                          auto insert = db.prepare(
                              "INSERT OR REPLACE INTO agents (id, gateway, name, uid, pid, command, started) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)");
                          insert.bind(1, row.id)
                              .bind(2, row.gateway)
                              .bind(3, row.name)
                              .bind(4, static_cast<std::int64_t>(row.uid))
                              .bind(5, static_cast<std::int64_t>(row.pid))
                              .bind(6, row.command)
                              .bind(7, to_micros(row.started))
                              .run();
                          const nlohmann::json details = {
                              {"name", row.name}, {"uid", row.uid}, {"pid", row.pid}, {"command", row.command}};
                          chain.append(db, AuditEvent{row.started, "agent.started", row.gateway, row.id,
                                                      "uid:" + std::to_string(row.uid), row.id, details.dump()});
                      },
                      {},
                      true},
                   false);
}

void Store::agent_exited(const std::string& id, int exit_code) {
    impl_->enqueue(Op{[id, exit_code](Database& db, AuditChain& chain) {
                          auto update = db.prepare("UPDATE agents SET exited = ?, exit_code = ? WHERE id = ?");
                          update.bind(1, to_micros(Clock::now())).bind(2, std::int64_t{exit_code}).bind(3, id).run();
                          std::string gateway;
                          auto row = db.prepare("SELECT gateway FROM agents WHERE id = ?");
                          row.bind(1, id);
                          if (row.step()) gateway = row.text(0);
                          const nlohmann::json details = {{"exit_code", exit_code}};
                          chain.append(db, AuditEvent{Clock::now(), "agent.exited", gateway, id, "tameflared", id,
                                                      details.dump()});
                      },
                      {},
                      true},
                   false);
}

Store::RetentionResult Store::apply_retention() {
    RetentionResult result;
    std::promise<std::string> finished;
    auto future = finished.get_future();
    Impl* impl = impl_.get();
    Op op;
    op.alone = [impl, &result] { result = impl->retention(); };
    op.done = [&finished](const std::string& error) { finished.set_value(error); };
    impl_->enqueue(std::move(op), false);
    const auto error = future.get();
    if (!error.empty()) throw StoreError(error);
    return result;
}

Database Store::reader() const {
    return Database::open(impl_->options.database, Database::Mode::read_only);
}

StoreCounters Store::counters() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->counters;
}

std::string Store::health() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->health;
}

const std::filesystem::path& Store::path() const {
    return impl_->options.database;
}

}  // namespace tameflare::store
