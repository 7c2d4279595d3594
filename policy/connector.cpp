#include "policy/connector.h"

#include "common/text.h"
#include "policy/internal/route_trie.h"
#include "policy/internal/text.h"

#include <algorithm>
#include <array>
#include <set>

namespace tameflare::policy {

namespace {

constexpr std::array<std::string_view, 3> kRisks{"low", "medium", "high"};
constexpr std::array<std::string_view, 2> kAccess{"read", "write"};
constexpr std::array<std::string_view, 4> kBodyModes{"auto", "json", "form", "none"};
constexpr std::array<std::string_view, 2> kEncodedSlash{"reject", "separator"};
constexpr std::array<std::string_view, 9> kMethods{"GET",    "HEAD",    "POST",  "PUT", "PATCH",
                                                   "DELETE", "OPTIONS", "TRACE", "*"};

bool valid_name(std::string_view name) {
    return is_name(name, 63, Letters::lower, "_-") && name[0] >= 'a' && name[0] <= 'z';
}

bool valid_identifier(std::string_view name) {
    if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
}

// Checks an action template: it starts with "<connector>.", its literal text is
// [A-Za-z0-9_.-], and every {placeholder} is one of `allowed` (or, when
// `params_prefix` is set, "params.<identifier>").
bool check_action(const JsonNode& node, const std::string& action, const std::string& connector,
                  const std::vector<std::string>& allowed, bool params_prefix) {
    if (!action.starts_with(connector + ".") || action.size() == connector.size() + 1) {
        node.error("action \"" + action + "\" does not start with \"" + connector + ".\"",
                   "actions are named <connector>.<resource>.<verb>, e.g. \"" + connector + ".item.create\"");
        return false;
    }
    std::size_t pos = 0;
    while (pos < action.size()) {
        const char c = action[pos];
        if (c == '{') {
            const auto close = action.find('}', pos);
            if (close == std::string::npos) {
                node.error("unclosed \"{\" in action \"" + action + "\"", "placeholders look like {method} or {name}");
                return false;
            }
            const std::string name = action.substr(pos + 1, close - pos - 1);
            const bool ok = std::find(allowed.begin(), allowed.end(), name) != allowed.end() ||
                            (params_prefix && name.starts_with("params.") && valid_identifier(name.substr(7)));
            if (!ok) {
                node.error("unknown placeholder {" + name + "} in action \"" + action + "\"",
                           "use {method}" + std::string(params_prefix ? ", {params.NAME}" : "") +
                               " or a parameter of the path template");
                return false;
            }
            pos = close + 1;
            continue;
        }
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '-' || c == '.';
        if (!ok || (c == '.' && (pos + 1 == action.size() || action[pos + 1] == '.'))) {
            node.error("invalid character in action \"" + action + "\"",
                       "action names use letters, digits, '_', '-' and single dots");
            return false;
        }
        ++pos;
    }
    return true;
}

// Validates a path template and returns its parameter names.
std::optional<std::vector<std::string>> check_path(const JsonNode& node, const std::string& path) {
    if (path.empty() || path[0] != '/') {
        node.error("path template \"" + path + "\" does not start with '/'", "e.g. \"/v1/items/{id}\"");
        return std::nullopt;
    }
    std::vector<std::string> names;
    const auto segments = split_path_template(path);
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const auto& segment = segments[i];
        const bool opens = segment.find('{') != std::string::npos;
        const bool closes = segment.find('}') != std::string::npos;
        if (!opens && !closes) {
            if (segment.find_first_of("?#%") != std::string::npos) {
                node.error("path template \"" + path + "\" has '?', '#' or '%' in a literal segment",
                           "templates match decoded paths; query strings are parameters, not part of the path");
                return std::nullopt;
            }
            continue;
        }
        std::string name = segment.size() >= 3 && segment.front() == '{' && segment.back() == '}'
                               ? segment.substr(1, segment.size() - 2)
                               : std::string();
        const bool rest = !name.empty() && (name.back() == '+' || name.back() == '*');
        if (rest) name.pop_back();
        if (!valid_identifier(name)) {
            node.error("bad parameter segment \"" + segment + "\" in path template \"" + path + "\"",
                       "a parameter is a whole segment: {name}, {name+} or {name*}");
            return std::nullopt;
        }
        if (rest && i + 1 != segments.size()) {
            node.error("{" + name + (segment[segment.size() - 2] == '+' ? "+" : "*") +
                           "} must be the last segment of \"" + path + "\"",
                       "a rest-of-path parameter takes every segment after it; use {" + name + "} for one segment");
            return std::nullopt;
        }
        if (std::find(names.begin(), names.end(), name) != names.end()) {
            node.error("parameter {" + name + "} appears twice in \"" + path + "\"",
                       "give each parameter its own name");
            return std::nullopt;
        }
        names.push_back(std::move(name));
    }
    return names;
}

std::optional<std::vector<std::string>> read_methods(const JsonNode& route) {
    const auto node = route.field("method");
    if (!node) {
        route.error("missing required field \"method\"", "give an HTTP method such as \"GET\", a list, or \"*\"");
        return std::nullopt;
    }
    std::vector<std::string> methods;
    std::vector<JsonNode> items;
    if (node->json().is_string()) {
        items.push_back(*node);
    } else if (node->json().is_array() && !node->json().empty()) {
        items = node->elements();
    } else {
        node->error("expected a method string or a non-empty array of them", "e.g. \"GET\" or [\"GET\", \"POST\"]");
        return std::nullopt;
    }
    for (const auto& item : items) {
        if (!item.expect_string()) return std::nullopt;
        const auto method = item.json().get<std::string>();
        if (std::find(kMethods.begin(), kMethods.end(), method) == kMethods.end()) {
            item.error("unknown HTTP method \"" + method + "\"",
                       "use upper case: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE or *");
            return std::nullopt;
        }
        if (method == "*") return std::vector<std::string>{};
        methods.push_back(method);
    }
    return methods;
}

std::optional<Variant> read_variant(const JsonNode& node, const std::string& connector,
                                    const std::vector<std::string>& placeholders) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"when", "action", "risk", "access"});
    Variant variant;
    const auto when = node.field("when");
    if (!when) {
        node.error("missing required field \"when\"", "e.g. {\"field\": \"state\", \"equals\": \"closed\"}");
        return std::nullopt;
    }
    if (!when->expect_object()) return std::nullopt;
    when->allow_fields({"field", "equals", "present"});
    auto field = when->string("field", true);
    if (!field) return std::nullopt;
    if (field->empty()) {
        when->error("empty field path", "name a parameter, e.g. \"state\" or \"metadata.kind\"");
        return std::nullopt;
    }
    variant.field = std::move(*field);
    const auto equals = when->string("equals", false);
    const auto present = when->boolean("present");
    if (equals.has_value() == present.has_value()) {
        when->error("a variant's \"when\" needs exactly one of \"equals\" or \"present\"",
                    "e.g. {\"field\": \"state\", \"equals\": \"closed\"} or {\"field\": \"sha\", \"present\": true}");
        return std::nullopt;
    }
    if (equals) {
        variant.test = Variant::Test::equals;
        variant.value = *equals;
    } else {
        variant.test = *present ? Variant::Test::present : Variant::Test::absent;
    }
    auto action = node.string("action", true);
    if (!action || !check_action(*node.field("action"), *action, connector, placeholders, false)) return std::nullopt;
    variant.action = std::move(*action);
    if (const auto risk = node.choice("risk", kRisks, false)) variant.risk = parse_risk(*risk);
    if (const auto access = node.choice("access", kAccess, false)) variant.access = parse_access(*access);
    return variant;
}

std::optional<Route> read_route(const JsonNode& node, const std::string& connector) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"method", "path", "action", "risk", "access", "variants", "credential_format"});
    const std::size_t errors_before = node.reader().error_count();
    Route route;
    auto methods = read_methods(node);
    auto path = node.string("path", true);
    auto action = node.string("action", true);
    if (!methods || !path || !action) return std::nullopt;
    route.methods = std::move(*methods);
    route.path = std::move(*path);
    auto names = check_path(*node.field("path"), route.path);
    if (!names) return std::nullopt;
    route.param_names = std::move(*names);
    std::vector<std::string> placeholders = route.param_names;
    placeholders.emplace_back("method");
    if (!check_action(*node.field("action"), *action, connector, placeholders, false)) return std::nullopt;
    route.action = std::move(*action);
    if (const auto risk = node.choice("risk", kRisks, false)) route.risk = *parse_risk(*risk);
    if (const auto access = node.choice("access", kAccess, false)) route.access = parse_access(*access);
    if (auto format = node.string("credential_format", false)) {
        if (const std::string problem = credential_format_error(*format); !problem.empty()) {
            node.field("credential_format")->error(problem, "e.g. \"Basic {basic:x-access-token}\"");
        }
        route.credential_format = std::move(*format);
    }
    if (const auto variants = node.field("variants"); variants && variants->expect_array()) {
        for (const auto& item : variants->elements()) {
            if (auto variant = read_variant(item, connector, placeholders))
                route.variants.push_back(std::move(*variant));
        }
    }
    if (node.reader().error_count() != errors_before) return std::nullopt;
    return route;
}

std::optional<RpcMethod> read_rpc_method(const JsonNode& node, const std::string& connector, bool needs_method) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"method", "action", "risk", "access"});
    RpcMethod rpc;
    if (needs_method) {
        auto method = node.string("method", true);
        if (!method) return std::nullopt;
        rpc.method = std::move(*method);
    }
    auto action = node.string("action", true);
    if (!action || !check_action(*node.field("action"), *action, connector, {"method"}, true)) return std::nullopt;
    rpc.action = std::move(*action);
    if (const auto risk = node.choice("risk", kRisks, false)) rpc.risk = *parse_risk(*risk);
    rpc.access = Access::write;
    if (const auto access = node.choice("access", kAccess, false)) rpc.access = *parse_access(*access);
    return rpc;
}

bool valid_domain(std::string_view domain) {
    if (domain.starts_with("*.")) domain.remove_prefix(2);
    if (domain.empty() || domain.size() > 253 || domain.front() == '.' || domain.back() == '.') return false;
    return std::all_of(domain.begin(), domain.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'; });
}

// credential.environment: variable names, none reserved for the daemon.
std::vector<std::string> read_environment(const JsonNode& credential) {
    auto names = credential.string_array("environment", false).value_or(std::vector<std::string>{});
    const auto node = credential.field("environment");
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string& name = names[i];
        if (!valid_environment_name(name)) {
            node->element(i).error("invalid environment variable name \"" + name + "\"",
                                   "use letters, digits and '_', not starting with a digit (OPENAI_API_KEY)");
        } else if (name.starts_with("TAMEFLARE_") || name.ends_with("_PROXY") || name.ends_with("_proxy")) {
            node->element(i).error("environment variable \"" + name + "\" is set by the daemon",
                                   "name the variable the service's SDK reads its key from");
        }
    }
    return names;
}

// ssh_remotes: each one of the connector's own domains.
std::vector<std::string> read_ssh_remotes(const JsonNode& root, const std::vector<std::string>& domains) {
    auto hosts = root.string_array("ssh_remotes", false).value_or(std::vector<std::string>{});
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        if (std::find(domains.begin(), domains.end(), hosts[i]) == domains.end()) {
            root.field("ssh_remotes")
                ->element(i)
                .error("ssh_remotes host \"" + hosts[i] + "\" is not one of the connector's domains",
                       "add it to \"domains\" or remove it: git over HTTPS to it must reach this connector");
        }
    }
    return hosts;
}

}  // namespace

ConnectorDef::ConnectorDef() : trie_(std::make_unique<RouteTrie>()) {}
ConnectorDef::~ConnectorDef() = default;

Access default_access(std::string_view method) noexcept {
    return (method == "GET" || method == "HEAD" || method == "OPTIONS") ? Access::read : Access::write;
}

std::optional<ConnectorDef::Match> ConnectorDef::match(std::string_view method,
                                                       std::span<const std::string> segments) const {
    return trie_->match(method, segments);
}

std::vector<std::string> ConnectorDef::static_actions() const {
    std::set<std::string> names{unknown_action()};
    const auto add = [&names](const std::string& action) {
        if (action.find('{') == std::string::npos) names.insert(action);
    };
    for (const auto& route : routes) {
        add(route.action);
        for (const auto& variant : route.variants) add(variant.action);
    }
    if (jsonrpc) {
        for (const auto& method : jsonrpc->methods) add(method.action);
        add(jsonrpc->fallback.action);
    }
    return {names.begin(), names.end()};
}

bool valid_environment_name(std::string_view name) noexcept {
    if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
}

bool check_domains(const JsonNode& node, const std::vector<std::string>& domains) {
    bool ok = true;
    for (std::size_t i = 0; i < domains.size(); ++i) {
        if (!valid_domain(domains[i])) {
            node.element(i).error("invalid domain \"" + domains[i] + "\"",
                                  "use a lower-case host name such as \"api.example.com\" or \"*.example.com\"");
            ok = false;
        }
    }
    return ok;
}

std::shared_ptr<const ConnectorDef> ConnectorDef::load(const JsonNode& root) {
    if (!root.expect_object()) return nullptr;
    root.allow_fields(
        {"name", "description", "domains", "credential", "ssh_remotes", "encoded_slash", "body", "jsonrpc", "routes"});
    const std::size_t errors_before = root.reader().error_count();
    auto def = std::make_shared<ConnectorDef>();
    if (auto name = root.string("name", true)) {
        if (!valid_name(*name)) {
            root.field("name")->error("invalid connector name \"" + *name + "\"",
                                      "use lower-case letters, digits, '_' and '-', starting with a letter");
        }
        def->name = std::move(*name);
    }
    def->description = root.string("description", false).value_or("");
    if (auto domains = root.string_array("domains", false)) {
        if (check_domains(*root.field("domains"), *domains)) def->domains = std::move(*domains);
    }
    if (const auto credential = root.field("credential")) {
        if (credential->expect_object()) {
            credential->allow_fields({"header", "format", "environment"});
            def->credential.header = credential->string("header", true).value_or("");
            def->credential.format = credential->string("format", true).value_or("");
            if (const auto format = credential->field("format"); format) {
                if (const std::string problem = credential_format_error(def->credential.format); !problem.empty()) {
                    format->error(problem, "e.g. \"Bearer {secret}\"");
                }
            }
            def->credential_environment = read_environment(*credential);
        }
    }
    def->ssh_remotes = read_ssh_remotes(root, def->domains);
    if (const auto slash = root.choice("encoded_slash", kEncodedSlash, false)) {
        def->encoded_slash_separates = *slash == "separator";
    }
    if (const auto body = root.choice("body", kBodyModes, false)) {
        def->body = *body == "json"   ? BodyMode::json
                    : *body == "form" ? BodyMode::form
                    : *body == "none" ? BodyMode::none
                                      : BodyMode::automatic;
    }
    if (root.reader().error_count() != errors_before) return nullptr;
    if (const auto rpc = root.field("jsonrpc"); rpc && rpc->expect_object()) {
        rpc->allow_fields({"methods", "default"});
        JsonRpcRules rules;
        if (const auto methods = rpc->field("methods"); methods && methods->expect_array()) {
            for (const auto& item : methods->elements()) {
                if (auto method = read_rpc_method(item, def->name, true)) rules.methods.push_back(std::move(*method));
            }
        }
        if (const auto fallback = rpc->field("default")) {
            if (auto method = read_rpc_method(*fallback, def->name, false)) rules.fallback = std::move(*method);
        } else {
            rpc->error("missing required field \"default\"", "e.g. {\"action\": \"" + def->name + ".rpc.{method}\"}");
        }
        def->jsonrpc = std::move(rules);
    }
    const auto routes = root.field("routes");
    if (!routes) {
        root.error("missing required field \"routes\"", "list the API's routes, or [] for a JSON-RPC-only connector");
        return nullptr;
    }
    if (!routes->expect_array()) return nullptr;
    // Routes are stored first and indexed after, so the trie's pointers stay valid.
    std::vector<JsonNode> route_nodes;
    for (const auto& item : routes->elements()) {
        if (auto route = read_route(item, def->name)) {
            def->routes.push_back(std::move(*route));
            route_nodes.push_back(item);
        }
    }
    for (std::size_t i = 0; i < def->routes.size(); ++i) {
        if (auto problem = def->trie_->add(def->routes[i]); !problem.empty()) {
            route_nodes[i].error(problem, "each method and path shape may appear once; merge the two routes");
        }
    }
    if (root.reader().error_count() != errors_before) return nullptr;
    return def;
}

std::string credential_format_error(std::string_view format) {
    if (format.find("{secret}") != std::string_view::npos) return {};
    const auto at = format.find("{basic:");
    if (at == std::string_view::npos) return "credential format has no {secret} (nor {basic:USER})";
    const auto end = format.find('}', at);
    const std::string_view user =
        end == std::string_view::npos ? std::string_view() : format.substr(at + 7, end - at - 7);
    if (user.empty() || user.find(':') != std::string_view::npos) {
        return "credential format's {basic:USER} needs a user name without ':'";
    }
    return {};
}

}  // namespace tameflare::policy
