#include "daemon/api/requests.h"

#include "common/text.h"

#include <set>
#include <sstream>

namespace tameflare::api {

namespace {

using ordered_json = nlohmann::ordered_json;
using control::ControlError;

}  // namespace

std::optional<std::string> decode_name(std::string_view text, bool plus_is_space) {
    auto out = percent_decode(text, plus_is_space);
    if (out && out->find('\0') != std::string::npos) return std::nullopt;
    return out;
}

std::string dump(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

// ---------------------------------------------------------------------------
// Routes

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> segments;
    if (path.empty() || path.front() != '/') return segments;
    path.remove_prefix(1);
    while (true) {
        const auto slash = path.find('/');
        segments.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return segments;
}

std::optional<std::vector<std::string_view>> fit(std::string_view pattern, const std::vector<std::string_view>& path) {
    const auto want = split_path(pattern);
    if (want.size() != path.size()) return std::nullopt;
    std::vector<std::string_view> params;
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (want[i].starts_with('{')) {
            if (path[i].empty()) return std::nullopt;
            params.push_back(path[i]);
        } else if (want[i] != path[i]) {
            return std::nullopt;
        }
    }
    return params;
}

// ---------------------------------------------------------------------------
// Request targets

// ---------------------------------------------------------------------------
// Errors and replies

Reply error_reply(http::status status, const std::string& code, const std::string& message, const std::string& hint,
                  const json& extra) {
    json body{{"error", code}, {"message", message}, {"hint", hint}};
    body.update(extra);
    return {status, dump(body), "application/json", ""};
}

http::status status_of(ControlError::Kind kind) {
    switch (kind) {
        case ControlError::Kind::bad_request: return http::status::bad_request;
        case ControlError::Kind::forbidden: return http::status::forbidden;
        case ControlError::Kind::not_found: return http::status::not_found;
        case ControlError::Kind::conflict: return http::status::conflict;
        case ControlError::Kind::too_large: return http::status::payload_too_large;
        case ControlError::Kind::unavailable: return http::status::service_unavailable;
        case ControlError::Kind::internal: break;
    }
    return http::status::internal_server_error;
}

ApiError bad_field(const std::string& field, const std::string& message, const std::string& hint) {
    return {http::status::bad_request, "bad_field", "\"" + field + "\" " + message, hint};
}

std::optional<Target> parse_target(std::string_view target) {
    // Absolute form ("http://localhost/v1/status"): the host is ignored.
    if (target.starts_with("http://") || target.starts_with("https://")) {
        const auto slash = target.find('/', target.find("//") + 2);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    if (!target.starts_with('/')) return std::nullopt;
    Target out;
    const auto question = target.find('?');
    out.path = target.substr(0, question);
    if (question == std::string_view::npos) return out;
    bool ok = true;
    for_each_form_pair(target.substr(question + 1), [&](std::string_view encoded_name, std::string_view encoded) {
        auto name = decode_name(encoded_name, true);
        auto value = decode_name(encoded, true);
        if (!name || !value) {
            ok = false;
            return;
        }
        out.query.emplace_back(std::move(*name), std::move(*value));
    });
    if (!ok) return std::nullopt;
    return out;
}

// ---------------------------------------------------------------------------
// Bodies: a JSON object, each field checked for its type, so that a wrong
// type is a 400 naming the field rather than an exception from deep inside.

json parse_object(const std::string& body) {
    if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
    auto document = json::parse(body, nullptr, false);
    if (document.is_discarded()) {
        throw ApiError{http::status::bad_request, "bad_json", "the request body is not valid JSON",
                       "send a JSON object (Content-Type: application/json)"};
    }
    if (!document.is_object()) {
        throw ApiError{http::status::bad_request, "bad_json", "the request body must be a JSON object",
                       "send a JSON object (Content-Type: application/json)"};
    }
    return document;
}

std::optional<std::string> string_field(const json& body, const std::string& name, bool required,
                                        const std::string& hint) {
    const auto it = body.find(name);
    if (it == body.end() || it->is_null()) {
        if (required) throw bad_field(name, "is required", hint);
        return std::nullopt;
    }
    if (!it->is_string()) throw bad_field(name, "must be a string", hint);
    return it->get<std::string>();
}

std::optional<bool> bool_field(const json& body, const std::string& name, bool required, const std::string& hint) {
    const auto it = body.find(name);
    if (it == body.end() || it->is_null()) {
        if (required) throw bad_field(name, "is required", hint);
        return std::nullopt;
    }
    if (!it->is_boolean()) throw bad_field(name, "must be true or false", hint);
    return it->get<bool>();
}

// ---------------------------------------------------------------------------
// Log queries

LogQuery log_query(const Query& query, bool audit) {
    LogQuery out;
    std::vector<std::pair<std::string, std::string>> filters;
    bool format_given = false;
    for (const auto& [name, value] : query) {
        if (name != "format") {
            filters.emplace_back(name, value);
            continue;
        }
        if (format_given) throw bad_field(name, "is given twice");
        format_given = true;
        if (value.empty() || value == "json") {
            out.format = LogFormat::document;
        } else if (value == "jsonl") {
            out.format = LogFormat::lines;
        } else if (value == "csv") {
            out.format = LogFormat::csv;
        } else {
            throw bad_field(name, "must be json, jsonl or csv");
        }
    }
    const auto kind = audit ? store::LogKind::audit : store::LogKind::traffic;
    try {
        out.filter = store::parse_log_filter(filters, kind, store::Clock::now());
    } catch (const store::FilterError& error) {
        const bool unknown = error.problem() == "is not a filter of this log";
        throw bad_field(error.name(), error.problem(),
                        unknown ? "filters: " + store::log_filter_names(kind) + ", format" : error.hint());
    }
    return out;
}

Reply log_reply(const LogQuery& query, const std::string& key,
                const std::function<void(store::Format, std::ostream&)>& write) {
    std::ostringstream out;
    write(query.format == LogFormat::csv ? store::Format::csv : store::Format::jsonl, out);
    if (query.format == LogFormat::csv) return {http::status::ok, out.str(), "text/csv; charset=utf-8", ""};
    if (query.format == LogFormat::lines) return {http::status::ok, out.str(), "application/x-ndjson", ""};
    // The same objects as JSON Lines, in one document.
    ordered_json rows = ordered_json::array();
    std::istringstream lines(out.str());
    std::string line;
    while (std::getline(lines, line)) {
        if (!line.empty()) rows.push_back(ordered_json::parse(line));
    }
    ordered_json body;
    body[key] = std::move(rows);
    return {http::status::ok, body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json", ""};
}

}  // namespace tameflare::api
