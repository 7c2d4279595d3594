#include "policy/classify.h"

#include "common/text.h"
#include "policy/internal/text.h"
#include "policy/params.h"

#include <algorithm>

namespace tameflare::policy {

namespace {

constexpr std::size_t kMaxSegments = 64;
constexpr std::size_t kMaxBatch = 100;

bool ambiguous_segment(std::string_view decoded) {
    return decoded == "." || decoded == ".." ||
           decoded.find_first_of(std::string_view("/\\\0", 3)) != std::string_view::npos;
}

void merge_missing(nlohmann::json& into, nlohmann::json&& from) {
    if (!from.is_object()) return;
    if (into.empty()) {
        into = std::move(from);
        return;
    }
    for (auto& [key, value] : from.get_ref<nlohmann::json::object_t&>()) {
        if (!into.contains(key)) into[key] = std::move(value);
    }
}

std::vector<Action> one(Action&& action) {
    std::vector<Action> out;
    out.push_back(std::move(action));
    return out;
}

std::optional<std::string> conflicting_key(const nlohmann::json& a, const nlohmann::json& b) {
    for (const auto& [key, value] : a.items()) {
        const auto other = b.find(key);
        if (other != b.end() && *other != value) return key;
    }
    return std::nullopt;
}

// "Application/JSON; charset=utf-8" -> "application/json".
std::string media_type(std::string_view content_type) {
    std::string_view media = content_type.substr(0, content_type.find(';'));
    const auto first = media.find_first_not_of(" \t");
    const auto last = media.find_last_not_of(" \t");
    return first == std::string_view::npos ? std::string() : ascii_lower(media.substr(first, last - first + 1));
}

bool looks_like_json(std::string_view body) {
    const auto first = body.find_first_not_of(" \t\r\n");
    return first != std::string_view::npos && (body[first] == '{' || body[first] == '[');
}

// Body fields; sets `complete` false when the body could not be read whole.
nlohmann::json body_parameters(BodyMode mode, const Request& request, bool& complete) {
    nlohmann::json out = nlohmann::json::object();
    if (request.body.empty()) {
        if (!request.body_complete) complete = false;
        return out;
    }
    const std::string media = mode == BodyMode::automatic ? media_type(request.content_type) : std::string();
    const bool as_json = mode == BodyMode::json ||
                         (mode == BodyMode::automatic && (media == "application/json" || media.ends_with("+json")));
    const bool as_form =
        mode == BodyMode::form || (mode == BodyMode::automatic && media == "application/x-www-form-urlencoded");
    if (as_json) {
        auto value = request.body_complete ? parse_json_body(request.body) : std::nullopt;
        if (!value) {
            complete = false;
        } else if (value->is_object()) {
            out = std::move(*value);
        } else {
            out["body"] = std::move(*value);
        }
    } else if (as_form) {
        std::string_view text = request.body;
        if (!request.body_complete) {
            // The last pair may be cut short ("amount=200" of "amount=20000"): drop it.
            const auto amp = text.rfind('&');
            text = amp == std::string_view::npos ? std::string_view() : text.substr(0, amp);
            complete = false;
        }
        if (!parse_form(text, out)) complete = false;
        // JSON sent as a form: an upstream that reads JSON whatever the
        // Content-Type would see fields we did not.
        if (looks_like_json(text)) complete = false;
    } else if (mode != BodyMode::none) {
        complete = false;  // a body we cannot read may carry what a condition looks for
    }
    return out;
}

std::string field_text(const nlohmann::json& value) {
    return value.is_string() ? value.get<std::string>() : dump_lossy(value);
}

std::string substitute(const std::string& pattern, const std::vector<std::string>& names,
                       const std::vector<std::string>& values, std::string_view method) {
    if (pattern.find('{') == std::string::npos) return pattern;
    std::string out;
    std::size_t pos = 0;
    while (pos < pattern.size()) {
        const auto open = pattern.find('{', pos);
        if (open == std::string::npos) {
            out.append(pattern, pos);
            break;
        }
        out.append(pattern, pos, open - pos);
        const auto close = pattern.find('}', open);
        const std::string name = pattern.substr(open + 1, close - open - 1);
        const auto it = std::find(names.begin(), names.end(), name);
        if (it != names.end()) {
            out += action_safe(values[static_cast<std::size_t>(it - names.begin())]);
        } else {
            out += action_safe(name == "method" ? ascii_lower(method) : std::string());
        }
        pos = close + 1;
    }
    return out;
}

int severity(Risk risk, Access access) {
    return static_cast<int>(risk) * 2 + (access == Access::write ? 1 : 0);
}

Action make_unknown(const ConnectorDef& def, const ClassifyOptions& options, const Request& request, std::string why) {
    Action action;
    action.connector = std::string(options.instance);
    action.provider = def.name;
    action.type = def.unknown_action();
    action.risk = Risk::high;
    action.access = Access::write;
    action.route = std::move(why);
    action.method = std::string(request.method);
    action.host = std::string(request.host);
    return action;
}

// Applies the first variant whose test holds. With an incomplete body a
// variant whose field is missing might hold: then the most severe candidate wins.
void apply_variants(const Route& route, Action& action) {
    struct Candidate {
        const std::string* type;
        Risk risk;
        Access access;
    };
    std::vector<Candidate> uncertain;
    Candidate chosen{&route.action, action.risk, action.access};
    for (const auto& variant : route.variants) {
        const nlohmann::json* field = find_field(action.parameters, variant.field);
        const Candidate candidate{&variant.action, variant.risk.value_or(action.risk),
                                  variant.access.value_or(action.access)};
        if (!field && !action.parameters_complete) {
            uncertain.push_back(candidate);
            continue;
        }
        bool holds = false;
        switch (variant.test) {
            case Variant::Test::equals: holds = field && field_text(*field) == variant.value; break;
            case Variant::Test::present: holds = field != nullptr; break;
            case Variant::Test::absent: holds = field == nullptr; break;
        }
        if (holds) {
            chosen = candidate;
            break;
        }
    }
    // An uncertain variant beats the route's own action at equal severity: the
    // variant is the more specific (close rather than update).
    for (const auto& candidate : uncertain) {
        const int stake = severity(candidate.risk, candidate.access) - severity(chosen.risk, chosen.access);
        if (stake > 0 || (stake == 0 && chosen.type == &route.action)) chosen = candidate;
    }
    if (chosen.type != &route.action) {
        action.type = *chosen.type;  // variants have no placeholders of their own beyond the route's
    }
    action.risk = chosen.risk;
    action.access = chosen.access;
}

std::vector<Action> classify_jsonrpc(const ConnectorDef& def, const ClassifyOptions& options, const Request& request,
                                     const Action& base) {
    if (!request.body_complete)
        return one(make_unknown(def, options, request, "JSON-RPC body larger than the read bound"));
    auto body = parse_json_body(request.body);
    if (!body || !(body->is_object() || (body->is_array() && !body->empty() && body->size() <= kMaxBatch))) {
        return one(make_unknown(def, options, request, "body is not a JSON-RPC call or batch"));
    }
    const auto& rules = *def.jsonrpc;
    std::vector<Action> actions;
    nlohmann::json calls = body->is_array() ? std::move(*body) : nlohmann::json::array();
    if (calls.empty()) calls.push_back(std::move(*body));
    actions.reserve(calls.size());
    for (auto& call : calls) {
        const auto method = call.is_object() ? call.find("method") : call.end();
        if (!call.is_object() || method == call.end() || !method->is_string()) {
            return one(make_unknown(def, options, request, "JSON-RPC entry without a method"));
        }
        const std::string name = method->get<std::string>();
        const auto rule = std::find_if(rules.methods.begin(), rules.methods.end(),
                                       [&](const RpcMethod& m) { return m.method == name; });
        const RpcMethod& chosen = rule == rules.methods.end() ? rules.fallback : *rule;
        nlohmann::json params;
        if (const auto it = call.find("params"); it != call.end()) params = std::move(*it);
        std::vector<std::string> names{"method"};
        std::string method_value = name;
        std::replace(method_value.begin(), method_value.end(), '/', '_');
        std::vector<std::string> values{method_value};
        bool missing = false;
        for (std::size_t open = chosen.action.find("{params."); open != std::string::npos;
             open = chosen.action.find("{params.", open + 1)) {
            const auto close = chosen.action.find('}', open);
            const std::string key = chosen.action.substr(open + 8, close - open - 8);
            const auto value = params.is_object() ? params.find(key) : params.end();
            if (!params.is_object() || value == params.end() || !value->is_string()) {
                missing = true;
                break;
            }
            names.push_back("params." + key);
            values.push_back(value->get<std::string>());
        }
        if (missing)
            return one(make_unknown(def, options, request,
                                    "JSON-RPC call \"" + name + "\" lacks a string parameter its action needs"));
        Action action = base;
        // {method} is the JSON-RPC method here, not the HTTP one.
        action.type = substitute(chosen.action, names, values, base.method);
        action.risk = chosen.risk;
        action.access = chosen.access;
        action.route = "jsonrpc " + name;
        if (params.is_object()) action.parameters = std::move(params);
        action.parameters["rpc_method"] = name;
        if (call.contains("id")) action.parameters["rpc_id"] = call["id"];
        actions.push_back(std::move(action));
    }
    return actions;
}

}  // namespace

const nlohmann::json* find_child(const nlohmann::json& node, std::string_view key) {
    if (node.is_object()) {
        const auto it = node.find(key);
        return it == node.end() ? nullptr : &*it;
    }
    if (!node.is_array() || key.empty() || key.size() > 9 ||
        !std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return nullptr;
    }
    std::size_t index = 0;
    for (const char c : key) index = index * 10 + static_cast<std::size_t>(c - '0');
    return index < node.size() ? &node[index] : nullptr;
}

const nlohmann::json* find_field(const nlohmann::json& root, std::string_view dotted) {
    const nlohmann::json* node = &root;
    while (node) {
        const auto dot = dotted.find('.');
        node = find_child(*node, dotted.substr(0, dot));
        if (dot == std::string_view::npos) return node;
        dotted.remove_prefix(dot + 1);
    }
    return nullptr;
}

const nlohmann::json* find_field(const nlohmann::json& root, std::span<const std::string> keys) {
    const nlohmann::json* node = &root;
    for (const auto& key : keys) {
        if (!(node = find_child(*node, key))) return nullptr;
    }
    return node;
}

// Where the next segment of `path` from `pos` ends: at '/', or at an
// encoded '/' (%2F, %2f) when those separate too.
std::pair<std::size_t, std::size_t> segment_end(std::string_view path, std::size_t pos, bool slash_separates) {
    for (std::size_t i = pos; i < path.size(); ++i) {
        if (path[i] == '/') return {i, 1};
        if (slash_separates && path[i] == '%' && i + 2 < path.size() && path[i + 1] == '2' &&
            (path[i + 2] == 'F' || path[i + 2] == 'f')) {
            return {i, 3};
        }
    }
    return {path.size(), 1};
}

std::optional<std::vector<std::string>> decode_path(std::string_view path, bool slash_separates) {
    if (path.empty() || path.front() != '/') return std::nullopt;
    std::vector<std::string> segments;
    segments.reserve(8);
    const bool escaped = path.find('%') != std::string_view::npos;
    std::size_t pos = 1;
    while (pos <= path.size()) {
        const auto [end, separator] = segment_end(path, pos, slash_separates && escaped);
        const std::string_view raw = path.substr(pos, end - pos);
        pos = end + separator;
        if (raw.empty()) continue;
        if (escaped) {
            auto decoded = percent_decode(raw, false);
            if (!decoded) return std::nullopt;
            segments.push_back(std::move(*decoded));
        } else {
            segments.emplace_back(raw);
        }
        if (ambiguous_segment(segments.back()) || segments.back().find('#') != std::string::npos ||
            segments.size() > kMaxSegments) {
            return std::nullopt;
        }
    }
    return segments;
}

std::vector<Action> classify(const ConnectorDef& def, const ClassifyOptions& options, const Request& request) {
    const auto question = request.target.find('?');
    const std::string_view path = request.target.substr(0, question);
    const std::string_view query =
        question == std::string_view::npos ? std::string_view() : request.target.substr(question + 1);
    const std::string method = ascii_upper(request.method);

    if (!request.method_override.empty() && !iequals(request.method_override, method)) {
        return one(make_unknown(def, options, request, "method override header changes the method"));
    }
    auto segments = decode_path(path, def.encoded_slash_separates);
    if (!segments)
        return one(make_unknown(def, options, request, "ambiguous path (dot segment, encoded '/', or bad escape)"));
    const auto& base = options.base_segments;
    if (!base.empty() && segments->size() >= base.size() &&
        std::equal(base.begin(), base.end(), segments->begin(),
                   [](const auto& a, const auto& b) { return iequals(a, b); })) {
        segments->erase(segments->begin(), segments->begin() + static_cast<std::ptrdiff_t>(base.size()));
    }

    Action action;
    action.connector = std::string(options.instance);
    action.provider = def.name;
    action.method = method;
    action.host = std::string(request.host);
    action.path = std::string(path);

    if (def.jsonrpc && method == "POST") return classify_jsonrpc(def, options, request, action);

    auto match = def.match(method, *segments);
    if (!match && method == "HEAD") match = def.match("GET", *segments);
    if (!match) {
        Action unknown = make_unknown(def, options, request, "no route for " + method + " " + std::string(path));
        unknown.path = action.path;
        return one(std::move(unknown));
    }
    const Route& route = *match->route;
    action.type = substitute(route.action, route.param_names, match->captures, method);
    auto& fields = action.parameters.get_ref<nlohmann::json::object_t&>();
    for (std::size_t i = 0; i < route.param_names.size(); ++i) {
        fields.emplace(route.param_names[i], std::move(match->captures[i]));
    }
    nlohmann::json query_params = nlohmann::json::object();
    bool complete = parse_form(query, query_params);
    // Parsing the body is the costliest step; skip it when nothing reads it.
    const bool read_body = !route.variants.empty() || !options.wants_body ||
                           options.wants_body(options.wants_body_context, action.type, route.param_names);
    nlohmann::json body_params = nlohmann::json::object();
    if (read_body) {
        body_params = body_parameters(def.body, request, complete);
    } else if (!request.body.empty() || !request.body_complete) {
        complete = false;
    }
    // A field sent twice with two values leaves it to the upstream which one
    // counts; the policy must not guess, so such a request is not classified.
    if (const auto clash = conflicting_key(query_params, body_params)) {
        Action unknown =
            make_unknown(def, options, request, "parameter \"" + *clash + "\" differs between query string and body");
        unknown.path = action.path;
        return one(std::move(unknown));
    }
    merge_missing(action.parameters, std::move(body_params));
    merge_missing(action.parameters, std::move(query_params));
    action.parameters_complete = complete;

    action.risk = route.risk;
    action.access = route.access.value_or(default_access(method));
    action.route = (route.methods.empty() ? std::string("*") : method) + " " + route.path;
    action.credential_format = route.credential_format;
    apply_variants(route, action);
    return one(std::move(action));
}

}  // namespace tameflare::policy
