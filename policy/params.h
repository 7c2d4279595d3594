// Turning the parts of a request into action parameters: percent-decoding,
// query strings and form bodies (with Stripe's bracket nesting), and JSON bodies.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace tameflare::policy {

// Parses "a=1&b[c]=2&d[]=x&d[]=y" into {"a":"1","b":{"c":"2"},"d":["x","y"]}.
// A repeated plain key becomes an array. Returns false (keeping what parsed)
// when a part is malformed or the nesting is too deep.
bool parse_form(std::string_view text, nlohmann::json& out);

// Parses a JSON body no deeper than `max_depth`. nullopt when invalid or too deep.
std::optional<nlohmann::json> parse_json_body(std::string_view body, int max_depth = 32);

inline constexpr int kMaxFormDepth = 8;

// Serializes a value that may hold bytes from the request (paths, query
// strings and forms are not required to be UTF-8): invalid sequences become
// U+FFFD instead of throwing.
std::string dump_lossy(const nlohmann::json& value, int indent = -1);

}  // namespace tameflare::policy
