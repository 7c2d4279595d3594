// A gateway drafted from traffic (tf policy suggest): the connectors with the
// actions that were seen as rules, tcp rules for the raw destinations, and
// a comment with counts on each, so that, applied at `full`, it allows what
// was seen and nothing more. Pure: the caller reads the traffic log and the
// gateway's file.
#pragma once

#include "policy/config.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tameflare::policy {

// One traffic record, as the log holds it.
struct Observation {
    std::string connector;  // the connector instance; "tcp", "dns", "tls"; "" for a host no connector served
    std::string action;     // "github.pr.list", "http.unknown", "tcp.connect", ...
    std::string method;
    std::string host;
    std::string path;  // the request's path and query; the port for tcp records
    std::string decision;
};

struct SuggestOptions {
    std::string gateway;  // its name
    std::string source;   // what was read, for the draft's comment ("12 records since 24h ago")
};

// The draft. `original` is the gateway's file (a JSON object, or null when
// there is none): everything in it but `connectors`, `tcp` and
// `enforcement` is kept, and each connector instance that was seen keeps
// its settings but for `preset` and `rules`. Hosts no connector of the
// gateway served get an instance of the shipped connector that serves them
// (their requests classified again with it), or of `http` (one per host).
// Requests no route explained (<connector>.unknown) are not allowed, only
// counted in the instance's comment.
nlohmann::ordered_json suggest_gateway(const Config& config, const nlohmann::json& original,
                                       const std::vector<Observation>& seen, const SuggestOptions& options);

}  // namespace tameflare::policy
