// A connector definition: the data file that maps an API's requests to actions.
#pragma once

#include "policy/action.h"
#include "policy/json_reader.h"

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::policy {

struct CredentialFormat {
    std::string header;  // e.g. "Authorization"
    std::string format;  // e.g. "Bearer {secret}"; "Basic {basic:USER}" is HTTP Basic of USER and the secret
};

// "" when `format` spells a credential: it holds {secret}, or {basic:USER}
// (USER not empty, without ':' or '}'); else what is wrong with it.
std::string credential_format_error(std::string_view format);

enum class BodyMode { automatic, json, form, none };

// Chooses between actions of one route by a parameter ("state": "closed").
struct Variant {
    enum class Test { equals, present, absent };
    std::string field;  // dotted path into the parameters
    Test test = Test::equals;
    std::string value;
    std::string action;
    std::optional<Risk> risk;
    std::optional<Access> access;
};

struct Route {
    std::vector<std::string> methods;  // empty: any method
    std::string path;                  // the template as written
    std::vector<std::string> param_names;
    std::string action;  // may hold {placeholders}
    Risk risk = Risk::low;
    std::optional<Access> access;  // default: by method
    std::vector<Variant> variants;
    // How the credential is spelled on this route, when not as the
    // connector's (github's git endpoints take HTTP Basic); "" for the
    // connector's (or the gateway's) format.
    std::string credential_format;
};

struct RpcMethod {
    std::string method;  // JSON-RPC method, e.g. "tools/call"
    std::string action;  // may hold {method} and {params.X}
    Risk risk = Risk::low;
    Access access = Access::write;
};

struct JsonRpcRules {
    std::vector<RpcMethod> methods;
    RpcMethod fallback;
};

class RouteTrie;

class ConnectorDef {
public:
    ConnectorDef();
    ~ConnectorDef();
    ConnectorDef(const ConnectorDef&) = delete;
    ConnectorDef& operator=(const ConnectorDef&) = delete;

    std::string name;
    std::string description;
    std::vector<std::string> domains;
    CredentialFormat credential;
    // Environment variables the service's SDKs read the credential from
    // (OPENAI_API_KEY): agents get a placeholder in each, never the secret.
    std::vector<std::string> credential_environment;
    // Hosts among `domains` whose git remotes over SSH (git@HOST:, ssh://git@HOST/)
    // agents have rewritten to HTTPS, so that git goes through this connector.
    std::vector<std::string> ssh_remotes;
    // Whether an encoded '/' in a path (%2F) separates segments, as the
    // service reads it ("encoded_slash": "separator"); else such a path is
    // ambiguous and the request <name>.unknown.
    bool encoded_slash_separates = false;
    BodyMode body = BodyMode::automatic;
    std::vector<Route> routes;
    std::optional<JsonRpcRules> jsonrpc;

    struct Match {
        const Route* route = nullptr;
        std::vector<std::string> captures;  // one per Route::param_names
    };
    // Segments are decoded path segments; `method` is upper case.
    [[nodiscard]] std::optional<Match> match(std::string_view method, std::span<const std::string> segments) const;

    // Every action name this connector can produce that has no placeholder.
    [[nodiscard]] std::vector<std::string> static_actions() const;
    [[nodiscard]] std::string unknown_action() const { return name + ".unknown"; }

    // Reads and validates one connector file; nullptr after recording errors.
    static std::shared_ptr<const ConnectorDef> load(const JsonNode& root);

private:
    std::unique_ptr<RouteTrie> trie_;
};

Access default_access(std::string_view method) noexcept;

// True for a POSIX environment variable name: [A-Za-z_][A-Za-z0-9_]*.
bool valid_environment_name(std::string_view name) noexcept;

// Records an error for each entry of `domains` (the array at `node`) that is
// not a lower-case host name or "*.suffix"; true when all are valid.
bool check_domains(const JsonNode& node, const std::vector<std::string>& domains);

}  // namespace tameflare::policy
