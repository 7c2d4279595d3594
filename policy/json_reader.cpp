#include "policy/json_reader.h"

#include <algorithm>
#include <vector>

namespace tameflare::policy {

namespace {

std::pair<int, int> line_column(std::string_view text, std::size_t byte) {
    int line = 1;
    int column = 1;
    const std::size_t end = std::min(byte, text.size());
    for (std::size_t i = 0; i + 1 < end; ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
            ++column;  // count characters, as editors do: UTF-8 continuation bytes are not columns
        }
    }
    return {line, column};
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string quoted_list(std::span<const std::string_view> items) {
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) out += ", ";
        out += '"';
        out += item;
        out += '"';
    }
    return out;
}

}  // namespace

std::string json_pointer_escape(std::string_view key) {
    std::string out;
    out.reserve(key.size());
    for (const char c : key) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out += c;
        }
    }
    return out;
}

std::string_view json_type_name(const nlohmann::json& value) {
    if (value.is_number()) return "a number";
    if (value.is_string()) return "a string";
    if (value.is_boolean()) return "a boolean";
    if (value.is_object()) return "an object";
    if (value.is_array()) return "an array";
    return "null";
}

std::string closest_match(std::string_view word, std::span<const std::string_view> candidates) {
    std::string best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& candidate : candidates) {
        const std::size_t distance = edit_distance(word, candidate);
        if (distance < best_distance) {
            best_distance = distance;
            best = candidate;
        }
    }
    return best;
}

std::optional<nlohmann::json> JsonReader::parse(std::string_view text) {
    try {
        return nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error& e) {
        ConfigError error;
        error.file = origin_;
        std::tie(error.line, error.column) = line_column(text, e.byte);
        std::string what = e.what();
        // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: ".
        if (const auto colon = what.find(": ", what.find("parse error")); colon != std::string::npos) {
            what = what.substr(colon + 2);
        }
        error.message = "invalid JSON: " + what;
        error.hint = "fix the syntax; `python3 -m json.tool FILE` shows the same position";
        errors_.push_back(std::move(error));
        return std::nullopt;
    }
}

void JsonReader::error(std::string pointer, std::string message, std::string hint) {
    errors_.push_back(ConfigError{origin_, std::move(pointer), 0, 0, std::move(message), std::move(hint)});
}

void JsonNode::missing(std::string_view key) const {
    error("missing required field \"" + std::string(key) + "\"",
          "add \"" + std::string(key) + "\" to this object; docs/configuration.md lists the fields");
}

void JsonNode::error(std::string message, std::string hint) const {
    reader_->error(pointer_, std::move(message), std::move(hint));
}

bool JsonNode::expect_object() const {
    if (value_->is_object()) return true;
    error("expected an object, found " + std::string(json_type_name(*value_)),
          "write a JSON object here: { \"field\": value, ... }; docs/configuration.md shows each shape");
    return false;
}

bool JsonNode::expect_array() const {
    if (value_->is_array()) return true;
    error("expected an array, found " + std::string(json_type_name(*value_)),
          "write a JSON array here: [ ... ], even for a single entry");
    return false;
}

bool JsonNode::expect_string() const {
    if (value_->is_string()) return true;
    error("expected a string, found " + std::string(json_type_name(*value_)), "put the value in double quotes");
    return false;
}

void JsonNode::allow_fields(std::initializer_list<std::string_view> known) const {
    if (!value_->is_object()) return;
    const std::span<const std::string_view> candidates(known.begin(), known.size());
    for (const auto& [key, value] : value_->items()) {
        if (std::find(known.begin(), known.end(), key) != known.end()) continue;
        const std::string suggestion = closest_match(key, candidates);
        reader_->error(
            pointer_ + "/" + json_pointer_escape(key), "unknown field \"" + key + "\"",
            suggestion.empty() ? "known fields: " + quoted_list(candidates) : "did you mean \"" + suggestion + "\"?");
    }
}

std::optional<JsonNode> JsonNode::field(std::string_view key) const {
    if (!value_->is_object()) return std::nullopt;
    const auto it = value_->find(key);
    if (it == value_->end()) return std::nullopt;
    return JsonNode(*reader_, *it, pointer_ + "/" + json_pointer_escape(key));
}

JsonNode JsonNode::element(std::size_t index) const {
    return JsonNode(*reader_, (*value_)[index], pointer_ + "/" + std::to_string(index));
}

std::vector<JsonNode> JsonNode::elements() const {
    std::vector<JsonNode> out;
    if (!value_->is_array()) return out;
    out.reserve(value_->size());
    for (std::size_t i = 0; i < value_->size(); ++i) out.push_back(element(i));
    return out;
}

std::vector<std::pair<std::string, JsonNode>> JsonNode::members() const {
    std::vector<std::pair<std::string, JsonNode>> out;
    if (!value_->is_object()) return out;
    for (const auto& [key, value] : value_->items()) {
        out.emplace_back(key, JsonNode(*reader_, value, pointer_ + "/" + json_pointer_escape(key)));
    }
    return out;
}

std::optional<std::string> JsonNode::string(std::string_view key, bool required) const {
    const auto node = field(key);
    if (!node) {
        if (required) missing(key);
        return std::nullopt;
    }
    if (!node->expect_string()) return std::nullopt;
    return node->json().get<std::string>();
}

std::optional<std::int64_t> JsonNode::integer(std::string_view key, std::int64_t min, std::int64_t max,
                                              bool required) const {
    const auto node = field(key);
    if (!node) {
        if (required) missing(key);
        return std::nullopt;
    }
    if (!node->json().is_number_integer()) {
        node->error("expected an integer, found " + std::string(json_type_name(node->json())),
                    "write a whole number without quotes, from " + std::to_string(min) + " to " + std::to_string(max));
        return std::nullopt;
    }
    const bool too_big = node->json().is_number_unsigned() && node->json().get<std::uint64_t>() > INT64_MAX;
    const std::int64_t value = too_big ? 0 : node->json().get<std::int64_t>();
    if (too_big || value < min || value > max) {
        node->error("value " + node->json().dump() + " is out of range",
                    "use an integer from " + std::to_string(min) + " to " + std::to_string(max));
        return std::nullopt;
    }
    return value;
}

std::optional<bool> JsonNode::boolean(std::string_view key) const {
    const auto node = field(key);
    if (!node) return std::nullopt;
    if (!node->json().is_boolean()) {
        node->error("expected true or false, found " + std::string(json_type_name(node->json())),
                    "write true or false without quotes");
        return std::nullopt;
    }
    return node->json().get<bool>();
}

std::optional<std::vector<std::string>> JsonNode::string_array(std::string_view key, bool required) const {
    const auto node = field(key);
    if (!node) {
        if (required) missing(key);
        return std::nullopt;
    }
    if (!node->expect_array()) return std::nullopt;
    std::vector<std::string> out;
    bool ok = true;
    for (const auto& item : node->elements()) {
        if (!item.expect_string()) {
            ok = false;
            continue;
        }
        auto text = item.json().get<std::string>();
        if (text.empty()) {
            item.error("empty string", "remove the entry or give a value");
            ok = false;
            continue;
        }
        out.push_back(std::move(text));
    }
    if (!ok) return std::nullopt;
    return out;
}

std::optional<std::string> JsonNode::choice(std::string_view key, std::span<const std::string_view> choices,
                                            bool required) const {
    auto text = string(key, required);
    if (!text) return std::nullopt;
    if (std::find(choices.begin(), choices.end(), *text) != choices.end()) return text;
    const std::string suggestion = closest_match(*text, choices);
    field(key)->error("unknown value \"" + *text + "\"",
                      (suggestion.empty() ? std::string() : "did you mean \"" + suggestion + "\"? ") +
                          "expected one of " + quoted_list(choices));
    return std::nullopt;
}

}  // namespace tameflare::policy
