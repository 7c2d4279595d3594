// The log filters by name (query.h): one parser for every front end.
#include "daemon/store/query.h"

#include <algorithm>
#include <array>
#include <set>

namespace tameflare::store {

namespace {

constexpr std::array<std::string_view, 6> kCommon{"since", "until", "gateway", "agent", "action", "limit"};

bool takes(LogKind kind, std::string_view name) {
    if (std::find(kCommon.begin(), kCommon.end(), name) != kCommon.end()) return true;
    return kind == LogKind::audit ? name == "event" : name == "connector" || name == "decision";
}

}  // namespace

FilterError::FilterError(std::string name, std::string value, std::string problem, std::string hint)
    : Error("filter \"" + name + "\" " + problem, std::move(hint)),
      name_(std::move(name)),
      value_(std::move(value)),
      problem_(std::move(problem)) {}

std::string log_filter_names(LogKind kind) {
    return kind == LogKind::audit ? "since, until, gateway, agent, action, event, limit"
                                  : "since, until, gateway, agent, connector, action, decision, limit";
}

void set_log_filter(LogFilter& filter, LogKind kind, std::string_view name, const std::string& value,
                    Clock::time_point now) {
    if (!takes(kind, name)) {
        throw FilterError(std::string(name), value, "is not a filter of this log",
                          "filters: " + log_filter_names(kind));
    }
    if (value.empty()) return;
    if (name == "since" || name == "until") {
        const auto time = parse_time(value, now);
        if (!time) {
            throw FilterError(std::string(name), value, "is neither an RFC 3339 time nor an age",
                              "e.g. 2026-11-26T10:00:00Z, 90s, 15m, 2h or 7d");
        }
        (name == "since" ? filter.since : filter.until) = time;
    } else if (name == "limit") {
        if (value.size() > 9 || value.find_first_not_of("0123456789") != std::string::npos) {
            throw FilterError(std::string(name), value, "must be a whole number",
                              "the newest N records; 0 or none for all");
        }
        filter.limit = std::stoul(value);
    } else {
        std::string& field = name == "gateway"     ? filter.gateway
                             : name == "agent"     ? filter.agent
                             : name == "action"    ? filter.action
                             : name == "connector" ? filter.connector
                             : name == "decision"  ? filter.decision
                                                   : filter.event;
        field = value;
    }
}

LogFilter parse_log_filter(const std::vector<std::pair<std::string, std::string>>& pairs, LogKind kind,
                           Clock::time_point now) {
    LogFilter filter;
    std::set<std::string_view> seen;
    for (const auto& [name, value] : pairs) {
        if (!seen.insert(name).second) throw FilterError(name, value, "is given twice");
        set_log_filter(filter, kind, name, value, now);
    }
    return filter;
}

}  // namespace tameflare::store
