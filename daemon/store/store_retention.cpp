// Retention: traffic rows and audit records older than the limit (or over
// the size limit, oldest first) are removed, leaving an anchor so the audit
// chain still verifies. Runs alone on the writer thread, between transactions.
#include "daemon/store/store_internal.h"

#include "common/log.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <future>
#include <span>

namespace tameflare::store {

using detail::Op;

// Removes everything older than `cutoff` (traffic rows and audit records),
// leaving an anchor so the chain still verifies from its new start.
Store::RetentionResult Store::Impl::prune_before(std::int64_t cutoff, const std::string& why) {
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
            const auto hex =
                to_hex(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(hash.data()), hash.size()));
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
            chain.append(db, AuditEvent{Clock::now(), "retention.applied", "", "", "tameflared", "", details.dump()});
        }
        transaction.commit();
    } catch (...) {
        chain.restore();
        throw;
    }
    return result;
}

std::int64_t Store::Impl::sqlite3_changes_count() {
    return db.scalar("SELECT changes()");
}

std::uint64_t Store::Impl::used_bytes() {
    return static_cast<std::uint64_t>(db.scalar("PRAGMA page_size")) *
           static_cast<std::uint64_t>(db.scalar("PRAGMA page_count") - db.scalar("PRAGMA freelist_count"));
}

Store::RetentionResult Store::Impl::retention() {
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

}  // namespace tameflare::store
