// The action model: what a request means, independent of how it arrived.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace tameflare::policy {

enum class Risk { low, medium, high };
enum class Access { read, write };

std::string_view to_string(Risk risk) noexcept;
std::string_view to_string(Access access) noexcept;
std::optional<Risk> parse_risk(std::string_view text) noexcept;
std::optional<Access> parse_access(std::string_view text) noexcept;

// An HTTP request as the proxy saw it. Views only: the caller owns the bytes.
struct Request {
    std::string_view method;           // upper case, e.g. "PUT"
    std::string_view host;             // verified server name, any case, no port
    std::string_view target;           // origin-form: path and optional "?query"
    std::string_view content_type;     // Content-Type header value, may be empty
    std::string_view body;             // the bytes read so far (bounded by the caller)
    bool body_complete = true;         // false when body holds only a prefix
    std::string_view method_override;  // X-HTTP-Method-Override and the like, if sent
};

// One action a request performs. A JSON-RPC batch performs several.
struct Action {
    std::string connector;  // the gateway's connector instance, e.g. "github"
    std::string provider;   // the connector definition, e.g. "github"
    std::string type;       // "github.pr.merge"
    Risk risk = Risk::high;
    Access access = Access::write;
    nlohmann::json parameters = nlohmann::json::object();
    // False when the body was cut at the size bound or could not be parsed:
    // a condition on a parameter that is missing then cannot be decided.
    bool parameters_complete = true;
    std::string route;  // the matched template ("PUT /repos/{owner}/...") or why none
    // The matched route's own credential format ("" for the connector's).
    std::string credential_format;
    std::string method;
    std::string host;
    std::string path;
};

}  // namespace tameflare::policy
