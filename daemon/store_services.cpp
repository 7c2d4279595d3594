#include "daemon/store_services.h"

#include "common/log.h"
#include "daemon/traffic_journal.h"

#include <nlohmann/json.hpp>

namespace tameflare::daemon {

namespace {

std::string dump(const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

store::AuditEvent action_event(const proxy::TrafficRecord& record, std::string event, nlohmann::json details) {
    details["action"] = record.action;
    details["connector"] = record.connector;
    details["decision"] = record.decision;
    details["method"] = record.method;
    details["host"] = record.host;
    details["path"] = record.path;
    details["reason"] = record.reason;
    return store::AuditEvent{std::chrono::system_clock::now(), std::move(event),  record.gateway, record.agent,
                             "agent:" + record.agent,          record.request_id, dump(details)};
}

}  // namespace

store::TrafficRow to_row(proxy::TrafficRecord record) {
    store::TrafficRow row;
    row.time = record.time;
    row.request_id = std::move(record.request_id);
    row.gateway = std::move(record.gateway);
    row.agent = std::move(record.agent);
    row.connector = std::move(record.connector);
    row.action = std::move(record.action);
    row.method = std::move(record.method);
    row.host = std::move(record.host);
    row.path = std::move(record.path);
    row.decision = std::move(record.decision);
    row.reason = std::move(record.reason);
    row.status = record.status;
    row.request_bytes = record.request_bytes;
    row.response_bytes = record.response_bytes;
    row.latency = record.latency;
    row.forwarded = record.forwarded;
    return row;
}

void StoreTrafficSink::commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) {
    auto event = action_event(record, "action.allowed", nlohmann::json::object());
    store_.commit(to_row(std::move(record)), {std::move(event)},
                  [done = std::move(done)](const std::string& error) { done(error); });
}

void StoreTrafficSink::record(proxy::TrafficRecord record) {
    std::string event;
    nlohmann::json details = nlohmann::json::object();
    if (record.forwarded) {
        event = "action.executed";
        details["status"] = record.status;
        details["request_bytes"] = record.request_bytes;
        details["response_bytes"] = record.response_bytes;
        details["latency_us"] = record.latency.count();
    } else if (record.decision == "error") {
        event = "action.failed";
        details["status"] = record.status;
    } else {
        event = "action.denied";
        details["status"] = record.status;
    }
    std::vector<store::AuditEvent> events;
    events.push_back(action_event(record, std::move(event), std::move(details)));
    if (journal_) journal_record(record);
    store_.record(to_row(std::move(record)), std::move(events));  // last use: its strings move
}

void RecordedApprovals::submit(const proxy::ApprovalRequest& request,
                               std::function<void(proxy::ApprovalAnswer)> answer) {
    store_.approval_requested(store::ApprovalRow{request.id, request.gateway, request.agent, request.connector,
                                                 request.action, request.risk, request.parameters, request.reason,
                                                 request.requested_at, request.timeout});
    nlohmann::json details = {{"action", request.action},
                              {"connector", request.connector},
                              {"risk", request.risk},
                              {"reason", request.reason},
                              {"timeout_s", request.timeout.count()}};
    details["parameters"] = nlohmann::json::parse(request.parameters, nullptr, false);
    if (details["parameters"].is_discarded()) details["parameters"] = nullptr;
    store_.audit(store::AuditEvent{request.requested_at, "action.pending_approval", request.gateway, request.agent,
                                   "agent:" + request.agent, request.id, dump(details)});
    inner_.submit(request, [this, id = request.id, gateway = request.gateway, agent = request.agent,
                            action = request.action, answer = std::move(answer)](proxy::ApprovalAnswer given) {
        const std::string state = given.approved ? "approved" : "denied";
        const nlohmann::json answered = {{"decision", state}, {"action", action}, {"note", given.note}};
        store_.approval_answered(
            id, state, given.note,
            store::AuditEvent{std::chrono::system_clock::now(), "approval.responded", gateway, agent,
                              given.actor.empty() ? "tameflared" : given.actor, id, dump(answered)});
        answer(std::move(given));
    });
}

void RecordedApprovals::withdraw(std::string_view id) {
    // Recorded only when still pending: a human's answer or a kill switch
    // that got there first keeps its own record.
    store_.later([id = std::string(id)](store::Database& db, store::AuditChain& chain) {
        const std::string note = "withdrawn by the proxy: no answer in time, or a kill switch denied it";
        auto update = db.prepare(
            "UPDATE approvals SET state = 'expired', answered = ?, note = ? WHERE id = ? AND state = 'pending' "
            "RETURNING gateway, agent, action");
        update.bind(1, store::to_micros(std::chrono::system_clock::now())).bind(2, note).bind(3, id);
        if (!update.step()) return;
        const nlohmann::json details = {{"decision", "expired"}, {"action", update.text(2)}, {"note", note}};
        store::AuditEvent event{std::chrono::system_clock::now(),
                                "approval.responded",
                                update.text(0),
                                update.text(1),
                                "tameflared",
                                id,
                                dump(details)};
        update.reset();
        chain.append(db, event);
    });
    inner_.withdraw(id);
}

std::optional<std::string> VaultCredentials::credential(std::string_view name) {
    try {
        return vault_.get(name);
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("vault: cannot read credential: ") + error.what(), {{"CREDENTIAL", name}});
        return std::nullopt;
    }
}

}  // namespace tameflare::daemon
