// Describing a policy evaluation the same way everywhere: tf policy test
// (offline) and the control API's policy test (the running configuration).
#pragma once

#include "policy/engine.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace tameflare::policy {

struct ParsedUrl {
    std::string host;
    std::string target;
};

// "https://api.github.com/repos/o/r?x=1" -> host "api.github.com", target "/repos/o/r?x=1".
std::optional<ParsedUrl> parse_url(std::string_view url);

// application/json for a body that looks like JSON, else form-encoded ("" for no body).
std::string guess_content_type(const std::string& body);

// The evaluation with its actions, parameters and trace.
nlohmann::json to_json(const Gateway& gateway, const Evaluation& evaluation);

}  // namespace tameflare::policy
