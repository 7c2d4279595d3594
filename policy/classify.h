// Request -> actions, for one connector instance of a gateway.
#pragma once

#include "policy/action.h"
#include "policy/connector.h"

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::policy {

struct ClassifyOptions {
    std::string_view instance;                   // connector instance name in the gateway
    std::span<const std::string> base_segments;  // path prefix stripped before matching (GitHub Enterprise)
    // Asked, when set, whether a body field may be wanted for an action type
    // whose route has the given path parameters (which shadow body fields of
    // the same name). When it says no and no variant needs the body, the body
    // is not parsed and the parameters are marked incomplete.
    bool (*wants_body)(const void* context, std::string_view action_type,
                       std::span<const std::string> path_parameters) = nullptr;
    const void* wants_body_context = nullptr;
};

// Never fails: a request no route explains becomes "<connector>.unknown".
// Returns one action, or one per call of a JSON-RPC batch.
std::vector<Action> classify(const ConnectorDef& def, const ClassifyOptions& options, const Request& request);

// Splits an origin-form target into decoded path segments. Empty segments are
// dropped; nullopt when the path is ambiguous (dot segments, encoded '/', '\' or
// NUL, a bad escape) and so must not be matched against routes. With
// `slash_separates`, an encoded '/' (%2F) separates segments as '/' does: for
// a service that reads it so (the npm registry: /@scope%2fname).
std::optional<std::vector<std::string>> decode_path(std::string_view path, bool slash_separates = false);

// Looks up a dotted path ("metadata.order", "items.0") in a JSON value:
// object members by name, array elements by decimal index.
const nlohmann::json* find_field(const nlohmann::json& root, std::string_view dotted);
// The same for a path already split into keys.
const nlohmann::json* find_field(const nlohmann::json& root, std::span<const std::string> keys);
// One step of such a path; nullptr when there is no such member or element.
const nlohmann::json* find_child(const nlohmann::json& node, std::string_view key);

}  // namespace tameflare::policy
