#include "policy/explain.h"

namespace tameflare::policy {

// "https://api.github.com/repos/o/r?x=1" -> host "api.github.com", target "/repos/o/r?x=1".
std::optional<ParsedUrl> parse_url(std::string_view url) {
    const auto scheme = url.find("://");
    if (scheme == std::string_view::npos) return std::nullopt;
    std::string_view rest = url.substr(scheme + 3);
    const auto path = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, path);
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
    if (authority.starts_with("[")) {  // an IPv6 literal: [::1]:8080
        authority = authority.substr(0, authority.find(']') + 1);
    } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        authority = authority.substr(0, colon);
    }
    if (authority.empty()) return std::nullopt;
    std::string target = path == std::string_view::npos ? "/" : std::string(rest.substr(path));
    if (target.front() == '?') target.insert(0, "/");
    return ParsedUrl{std::string(authority), std::move(target)};
}

std::string guess_content_type(const std::string& body) {
    if (body.empty()) return {};
    const auto first = body.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && (body[first] == '{' || body[first] == '[')) return "application/json";
    return "application/x-www-form-urlencoded";
}

nlohmann::json to_json(const Gateway& gateway, const Evaluation& evaluation) {
    const auto& decision = evaluation.decision;
    nlohmann::json out{
        {"gateway", gateway.name},
        {"enforcement", to_string(gateway.enforcement)},
        {"connector", evaluation.connector ? evaluation.connector->name : ""},
        {"decision", to_string(decision.label)},
        {"verdict", to_string(decision.verdict)},
        {"effect", to_string(decision.effect)},
        {"reason", decision.reason},
        {"actions", nlohmann::json::array()},
        {"trace", nlohmann::json::array()},
    };
    if (decision.verdict == Verdict::hold) out["approval_timeout_seconds"] = decision.approval_timeout.count();
    for (const auto& action : evaluation.actions) {
        out["actions"].push_back({{"action", action.type},
                                  {"risk", to_string(action.risk)},
                                  {"access", to_string(action.access)},
                                  {"route", action.route},
                                  {"parameters", action.parameters},
                                  {"parameters_complete", action.parameters_complete}});
    }
    for (const auto& step : decision.trace) out["trace"].push_back({{"stage", step.stage}, {"detail", step.detail}});
    return out;
}

}  // namespace tameflare::policy
