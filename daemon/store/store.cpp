#include "daemon/store/store.h"

#include "daemon/store/store_internal.h"

#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <tuple>

namespace tameflare::store {

using detail::Op;

std::int64_t to_micros(Clock::time_point time) {
    return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

Clock::time_point from_micros(std::int64_t micros) {
    return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(micros)));
}

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
