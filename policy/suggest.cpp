#include "policy/suggest.h"

#include "common/address.h"
#include "policy/classify.h"
#include "policy/internal/text.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>

namespace tameflare::policy {
namespace {

using Json = nlohmann::ordered_json;

// Decision labels by how often each was seen: "seen 3 times: allowed 2, would_deny 1".
using Counts = std::map<std::string, std::uint64_t>;

std::string describe(const Counts& counts) {
    std::uint64_t total = 0;
    std::string parts;
    for (const auto& [decision, count] : counts) {
        total += count;
        parts += (parts.empty() ? "" : ", ") + decision + " " + std::to_string(count);
    }
    return "seen " + std::to_string(total) + (total == 1 ? " time: " : " times: ") + parts;
}

// A decision that put the request before a human stays one.
bool needed_approval(const Counts& counts) {
    return std::any_of(counts.begin(), counts.end(), [](const auto& entry) {
        return entry.first == "pending_approval" || entry.first == "would_require_approval" ||
               entry.first == "approval_timeout";
    });
}

bool serves(const std::vector<std::string>& domains, const std::string& host) {
    return std::any_of(domains.begin(), domains.end(), [&](const std::string& domain) {
        if (domain.starts_with("*.")) return host.size() > domain.size() - 1 && host.ends_with(domain.substr(1));
        return domain == host;
    });
}

// The shipped connector whose own domains serve `host`, if one does.
const ConnectorDef* connector_serving(const Config& config, const std::string& host) {
    for (const auto& [name, def] : config.connectors) {
        if (serves(def->domains, host)) return def.get();
    }
    return nullptr;
}

// An instance name for `host` under the generic http connector: "http-" and
// the host with anything but [a-z0-9-] made '-'.
std::string http_instance_name(const std::string& host) {
    std::string name = "http-";
    for (const char c : ascii_lower(host)) name += ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '-';
    return name;
}

// What the draft collects about one connector instance.
struct Instance {
    std::string connector;             // the definition's name
    std::vector<std::string> domains;  // empty: the definition's own
    std::string credential;            // the vault entry, "" for none
    std::map<std::string, Counts> actions;
    Counts unexplained;                 // <connector>.unknown: counted, never allowed
    bool existing = false;              // one of the gateway's own
    bool drafted_for_unserved = false;  // made for hosts no connector of the gateway served
};

struct Draft {
    std::map<std::string, Instance> instances;
    std::map<std::pair<std::string, std::string>, Counts> tcp;  // (host or address, port)
    std::uint64_t skipped = 0;
};

// A request to a host none of the gateway's connectors served: a shipped
// connector that serves it classifies it again; else an http instance of
// its own, its action http.<method>.
void add_unserved(const Config& config, Draft& draft, const Observation& seen) {
    const std::string host = ascii_lower(seen.host);
    if (const ConnectorDef* def = connector_serving(config, host)) {
        const std::string method = ascii_upper(seen.method);
        const Request request{method, host, seen.path.empty() ? std::string_view("/") : std::string_view(seen.path)};
        const auto actions = classify(*def, ClassifyOptions{def->name, {}}, request);
        auto [it, added] = draft.instances.try_emplace(def->name);
        Instance& instance = it->second;
        if (added) {
            instance.connector = def->name;
            instance.drafted_for_unserved = true;
        }
        for (const auto& action : actions) {
            if (action.type.ends_with(".unknown")) {
                ++instance.unexplained[seen.decision];
            } else {
                ++instance.actions[action.type][seen.decision];
            }
        }
        return;
    }
    auto [it, added] = draft.instances.try_emplace(http_instance_name(host));
    Instance& instance = it->second;
    if (added) {
        instance.connector = "http";
        instance.domains = {host};
        instance.drafted_for_unserved = true;
    }
    ++instance.actions["http." + ascii_lower(seen.method.empty() ? "get" : seen.method)][seen.decision];
}

Draft collect(const Config& config, const Gateway* gateway, const std::vector<Observation>& seen) {
    Draft draft;
    for (const auto& observation : seen) {
        if (observation.connector == "tcp") {
            ++draft.tcp[{ascii_lower(observation.host), observation.path}][observation.decision];
            continue;
        }
        const ConnectorInstance* existing = nullptr;
        if (gateway != nullptr) {
            const auto found =
                std::find_if(gateway->connectors.begin(), gateway->connectors.end(),
                             [&](const ConnectorInstance& instance) { return instance.name == observation.connector; });
            if (found != gateway->connectors.end()) existing = &*found;
        }
        if (existing != nullptr) {
            Instance& instance = draft.instances[existing->name];
            instance.connector = existing->def->name;
            instance.existing = true;
            if (existing->domains != existing->def->domains) instance.domains = existing->domains;
            instance.credential = existing->credential;
            if (observation.action.ends_with(".unknown") || observation.action.empty()) {
                ++instance.unexplained[observation.decision];
            } else {
                ++instance.actions[observation.action][observation.decision];
            }
        } else if (observation.connector.empty() && observation.action == "http.unknown" && !observation.host.empty()) {
            add_unserved(config, draft, observation);
        } else {
            ++draft.skipped;  // DNS names, refused handshakes, instances the gateway no longer has
        }
    }
    return draft;
}

Json rules_of(const Instance& instance) {
    Json rules = Json::array();
    for (const auto& [action, counts] : instance.actions) {
        rules.push_back({{"action", action},
                         {"decision", needed_approval(counts) ? "require_approval" : "allow"},
                         {"comment", describe(counts)}});
    }
    return rules;
}

std::string instance_comment(const Instance& instance) {
    std::string comment = instance.drafted_for_unserved
                              ? "drafted: hosts no connector of the gateway served; add a credential if the service "
                                "needs one"
                              : "drafted: the actions seen, each allowed alone";
    if (!instance.unexplained.empty()) {
        comment += "; requests no route explained (" + instance.connector + ".unknown, " +
                   describe(instance.unexplained) + ") are not allowed: decide them by hand";
    }
    return comment;
}

Json tcp_rules(const Draft& draft) {
    Json rules = Json::array();
    for (const auto& [destination, counts] : draft.tcp) {
        const auto& [host, port_text] = destination;
        Json rule = Json::object();
        rule[IpAddress::parse(host) ? "cidr" : "host"] = host;
        try {
            rule["port"] = std::stoi(port_text);
        } catch (const std::exception&) {
            continue;  // a record without its port cannot make a rule
        }
        rule["comment"] = describe(counts);
        rules.push_back(std::move(rule));
    }
    return rules;
}

}  // namespace

nlohmann::ordered_json suggest_gateway(const Config& config, const nlohmann::json& original,
                                       const std::vector<Observation>& seen, const SuggestOptions& options) {
    const Gateway* gateway = config.gateway(options.gateway);
    const Draft draft = collect(config, gateway, seen);

    Json out = Json::object();
    out["name"] = options.gateway;
    out["comment"] = "drafted by tf policy suggest from " + options.source +
                     ": allows what was seen and nothing more; review it, then tf policy check";
    out["enforcement"] = "full";
    if (original.is_object()) {
        for (const auto& [key, value] : original.items()) {
            if (key != "name" && key != "comment" && key != "enforcement" && key != "connectors" && key != "tcp") {
                out[key] = value;
            }
        }
    }
    Json connectors = Json::object();
    for (const auto& [name, instance] : draft.instances) {
        if (instance.actions.empty() && instance.unexplained.empty()) continue;
        Json entry = Json::object();
        const nlohmann::json* settings = nullptr;
        if (instance.existing && original.is_object() && original.contains("connectors") &&
            original["connectors"].is_object() && original["connectors"].contains(name)) {
            settings = &original["connectors"][name];
        }
        if (settings != nullptr && settings->is_object()) {
            for (const auto& [key, value] : settings->items()) {
                if (key != "preset" && key != "rules" && key != "comment") entry[key] = value;
            }
        } else {
            if (name != instance.connector) entry["connector"] = instance.connector;
            if (!instance.domains.empty()) entry["domains"] = instance.domains;
            if (!instance.credential.empty()) entry["credential"] = instance.credential;
        }
        entry["comment"] = instance_comment(instance);
        entry["rules"] = rules_of(instance);
        connectors[name] = std::move(entry);
    }
    out["connectors"] = std::move(connectors);
    if (const Json tcp = tcp_rules(draft); !tcp.empty()) out["tcp"] = tcp;
    return out;
}

}  // namespace tameflare::policy
