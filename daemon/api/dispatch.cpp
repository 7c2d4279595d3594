// The routes onto Control: one case per REST operation, a refusal turned
// into its error document.
#include "daemon/api/api_internal.h"

#include "common/log.h"
#include "daemon/store/query.h"

#include <ostream>

namespace tameflare::api {

using namespace detail;

// One piece over 100 lines: the route table, one short case per REST operation onto Control (its body's fields
// read, its result written as JSON); split up, the cases would only move behind a table of functions.
// NOLINTNEXTLINE(readability-function-size)
Reply ApiServer::Impl::dispatch(Op op, const std::vector<std::string>& params, const Query& query,
                                const Request& request, const Caller& caller) {
    const auto ok = [](const json& body) { return Reply{http::status::ok, dump(body), "application/json", ""}; };
    const auto param = [&](std::size_t i) -> const std::string& { return params.at(i); };
    try {
        switch (op) {
            case Op::status: return ok(control::to_json(control.status(caller)));
            case Op::gateways: return ok(control::to_json(control.gateways(caller)));
            case Op::gateway: return ok(control::to_json(control.gateway(caller, param(0))));
            case Op::set_enforcement: {
                const auto body = parse_object(request.body());
                const auto level = string_field(body, "level", true, "monitor, soft or full");
                return ok(control::summary_json(*control.set_enforcement(caller, param(0), *level)));
            }
            case Op::reload: {
                const auto result = control.reload(caller);
                // A refused configuration is the caller's to fix: 400 with the errors.
                if (!result.reloaded) {
                    json extra{{"errors", control::to_json(result.errors)}};
                    return error_reply(http::status::bad_request, "config_invalid",
                                       "the configuration on disk is invalid; the running one stays in force",
                                       "fix the errors listed, then reload again", extra);
                }
                return ok(control::to_json(result));
            }
            case Op::check_config: return ok(control::to_json(control.check_config(caller)));
            case Op::policy_test: {
                const auto body = parse_object(request.body());
                json test = json::object();
                test["gateway"] = *string_field(body, "gateway", true);
                test["method"] = string_field(body, "method", false).value_or("GET");
                test["url"] = *string_field(body, "url", true, "an absolute URL, e.g. https://api.github.com/user");
                test["body"] = string_field(body, "body", false).value_or("");
                if (auto type = string_field(body, "content_type", false)) test["content_type"] = std::move(*type);
                json headers = json::object();
                if (const auto it = body.find("headers"); it != body.end() && !it->is_null()) {
                    if (!it->is_object()) throw bad_field("headers", "must be an object of strings");
                    for (const auto& [name, value] : it->items()) {
                        if (!value.is_string()) throw bad_field("headers", "must be an object of strings");
                        headers[name] = value;
                    }
                }
                test["headers"] = std::move(headers);
                return ok(control.test_request(caller, test));
            }
            case Op::agents: return ok(control::to_json(control.agents(caller)));
            case Op::agent: return ok(control::to_json(control.agent(caller, param(0))));
            case Op::stop_agent: return ok(control::to_json(control.stop_agent(caller, param(0))));
            case Op::approvals: return ok(control::to_json(control.approvals(caller)));
            case Op::approval: return ok(control::to_json(control.approval(caller, param(0))));
            case Op::approve:
            case Op::deny: {
                const auto body = parse_object(request.body());
                const auto note = string_field(body, "note", false).value_or("");
                return ok(control::to_json(control.answer(caller, param(0), op == Op::approve, note)));
            }
            case Op::kill_switch: return ok(control::to_json(control.kill_switch(caller)));
            case Op::set_kill_switch: {
                const auto body = parse_object(request.body());
                const bool active = *bool_field(body, "active", true);
                const auto scope =
                    string_field(body, "scope", false, "all, gateway:NAME or connector:NAME").value_or("all");
                const auto reason = string_field(body, "reason", false).value_or("");
                return ok(control::to_json(control.set_kill_switch(caller, active, scope, reason)));
            }
            case Op::traffic: {
                const auto logs = log_query(query, false);
                return log_reply(logs, "rows", [&](store::Format format, std::ostream& out) {
                    store::TrafficWriter writer(out, format);
                    writer.header();
                    control.traffic(caller, logs.filter, [&](const store::TrafficRow& row) { writer.write(row); });
                });
            }
            case Op::audit: {
                const auto logs = log_query(query, true);
                return log_reply(logs, "records", [&](store::Format format, std::ostream& out) {
                    store::AuditWriter writer(out, format);
                    writer.header();
                    control.audit(caller, logs.filter, [&](const store::AuditRecord& record) { writer.write(record); });
                });
            }
            case Op::audit_verify: return ok(control::to_json(control.verify_audit(caller)));
            case Op::vault: return ok(control::to_json(control.vault(caller)));
            case Op::vault_set: {
                const auto body = parse_object(request.body());
                const auto value = string_field(body, "value", true, "the secret, as a JSON string");
                const auto connector = string_field(body, "connector", false).value_or("");
                return ok(control::to_json(control.vault_set(caller, param(0), connector, *value)));
            }
            case Op::vault_remove: return ok(control::to_json(control.vault_remove(caller, param(0))));
            case Op::vault_rotate: return ok(control::to_json(control.vault_rotate(caller)));
            case Op::openapi:
                control.authorize(caller, Role::none);
                return {http::status::ok, openapi(), "application/json", ""};
            case Op::metrics: return {http::status::ok, control.metrics(caller), "text/plain; version=0.0.4", ""};
            case Op::events: break;  // streamed by session()
        }
        throw std::logic_error("unrouted operation");
    } catch (const ApiError& refusal) {
        return error_reply(refusal.status, refusal.code, refusal.message, refusal.hint);
    } catch (const ControlError& refusal) {
        if (refusal.kind() == ControlError::Kind::forbidden) {
            log(LogLevel::debug, "REST call refused: " + std::string(refusal.what()), {{"CALLER", caller.describe()}});
        }
        return error_reply(status_of(refusal.kind()), refusal.code(), refusal.what(), refusal.hint());
    } catch (const json::exception& failure) {
        // A value of the wrong type that reached Control (json's type_error).
        return error_reply(http::status::bad_request, "bad_field",
                           std::string("a field has the wrong type: ") + failure.what(),
                           "see GET /v1/openapi.json for the request's schema");
    } catch (const std::exception& failure) {
        log(LogLevel::error, std::string("REST call failed: ") + failure.what(), {{"CALLER", caller.describe()}});
        return error_reply(http::status::internal_server_error, "internal", failure.what(),
                           "the daemon's log has the details");
    }
}

}  // namespace tameflare::api
