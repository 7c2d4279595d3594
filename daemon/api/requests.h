// The REST API's requests before Control is asked, pure (no sockets):
// the route table, request targets and their query strings, JSON bodies
// checked field by field, log queries, and the error document. Used by
// the server's connection.cpp and dispatch.cpp; tested in
// tests/daemon/api/requests_test.cpp.
#pragma once

#include "daemon/control/control.h"
#include "daemon/store/query.h"

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tameflare::api {

namespace http = boost::beast::http;
using json = nlohmann::json;

enum class Op {
    status,
    gateways,
    gateway,
    set_enforcement,
    reload,
    check_config,
    policy_test,
    agents,
    agent,
    stop_agent,
    approvals,
    approval,
    approve,
    deny,
    kill_switch,
    set_kill_switch,
    traffic,
    audit,
    audit_verify,
    vault,
    vault_set,
    vault_remove,
    vault_rotate,
    events,
    openapi,
    metrics,
};

struct RouteEntry {
    http::verb method;
    std::string_view path;  // "{name}" matches one non-empty segment
    Op op;
};

inline constexpr std::array kRoutes{
    RouteEntry{http::verb::get, "/v1/status", Op::status},
    RouteEntry{http::verb::get, "/v1/gateways", Op::gateways},
    RouteEntry{http::verb::get, "/v1/gateways/{name}", Op::gateway},
    RouteEntry{http::verb::put, "/v1/gateways/{name}/enforcement", Op::set_enforcement},
    RouteEntry{http::verb::post, "/v1/reload", Op::reload},
    RouteEntry{http::verb::post, "/v1/config/check", Op::check_config},
    RouteEntry{http::verb::post, "/v1/policy/test", Op::policy_test},
    RouteEntry{http::verb::get, "/v1/agents", Op::agents},
    RouteEntry{http::verb::get, "/v1/agents/{id}", Op::agent},
    RouteEntry{http::verb::post, "/v1/agents/{id}/stop", Op::stop_agent},
    RouteEntry{http::verb::get, "/v1/approvals", Op::approvals},
    RouteEntry{http::verb::get, "/v1/approvals/{id}", Op::approval},
    RouteEntry{http::verb::post, "/v1/approvals/{id}/approve", Op::approve},
    RouteEntry{http::verb::post, "/v1/approvals/{id}/deny", Op::deny},
    RouteEntry{http::verb::get, "/v1/kill-switch", Op::kill_switch},
    RouteEntry{http::verb::put, "/v1/kill-switch", Op::set_kill_switch},
    RouteEntry{http::verb::get, "/v1/traffic", Op::traffic},
    RouteEntry{http::verb::get, "/v1/audit", Op::audit},
    RouteEntry{http::verb::get, "/v1/audit/verify", Op::audit_verify},
    RouteEntry{http::verb::get, "/v1/vault", Op::vault},
    RouteEntry{http::verb::put, "/v1/vault/{name}", Op::vault_set},
    RouteEntry{http::verb::delete_, "/v1/vault/{name}", Op::vault_remove},
    RouteEntry{http::verb::post, "/v1/vault/rotate", Op::vault_rotate},
    RouteEntry{http::verb::get, "/v1/events", Op::events},
    RouteEntry{http::verb::get, "/v1/openapi.json", Op::openapi},
    RouteEntry{http::verb::get, "/metrics", Op::metrics},
};

std::vector<std::string_view> split_path(std::string_view path);
// The raw (still percent-encoded) values of the pattern's parameters, or
// nullopt when the path does not fit it.
std::optional<std::vector<std::string_view>> fit(std::string_view pattern, const std::vector<std::string_view>& path);

using Query = std::vector<std::pair<std::string, std::string>>;

struct Target {
    std::string_view path;  // still encoded
    Query query;            // decoded
};

// Percent-decoded; nullopt for a broken escape or a NUL byte (no name here
// may hold one).
std::optional<std::string> decode_name(std::string_view text, bool plus_is_space);
// The path and the decoded query of an origin-form (or absolute-form)
// target; nullopt for a broken escape or a NUL byte in a name or value.
std::optional<Target> parse_target(std::string_view target);

struct Reply {
    http::status status = http::status::ok;
    std::string body;
    std::string content_type = "application/json";
    std::string allow;  // 405 only
};

// A refusal made here, before Control is asked.
struct ApiError {
    http::status status;
    std::string code;
    std::string message;
    std::string hint;
};

Reply error_reply(http::status status, const std::string& code, const std::string& message, const std::string& hint,
                  const json& extra = json::object());
http::status status_of(control::ControlError::Kind kind);
ApiError bad_field(const std::string& field, const std::string& message, const std::string& hint = {});

// Bodies: a JSON object, each field checked for its type, so that a wrong
// type is a 400 naming the field rather than an exception from deep inside.
json parse_object(const std::string& body);
std::optional<std::string> string_field(const json& body, const std::string& name, bool required,
                                        const std::string& hint = {});
std::optional<bool> bool_field(const json& body, const std::string& name, bool required, const std::string& hint = {});

enum class LogFormat { document, lines, csv };

struct LogQuery {
    store::LogFilter filter;
    LogFormat format = LogFormat::document;
};

// The filters and format of a GET /v1/traffic or /v1/audit query string.
LogQuery log_query(const Query& query, bool audit);
Reply log_reply(const LogQuery& query, const std::string& key,
                const std::function<void(store::Format, std::ostream&)>& write);

std::string dump(const json& value);  // one line, invalid UTF-8 replaced, with a newline

}  // namespace tameflare::api
