// Strict reading of JSON configuration: every type mismatch, unknown field or
// out-of-range value becomes a ConfigError naming the file, the JSON pointer
// and a hint. Used by the policy loader and by the daemon's own config.
#pragma once

#include "policy/config_error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tameflare::policy {

class JsonReader {
public:
    JsonReader(std::string origin, ConfigErrors& errors) : origin_(std::move(origin)), errors_(errors) {}

    // Parses `text`; a syntax error is recorded with line and column.
    std::optional<nlohmann::json> parse(std::string_view text);

    void error(std::string pointer, std::string message, std::string hint = {});
    [[nodiscard]] const std::string& origin() const { return origin_; }
    [[nodiscard]] std::size_t error_count() const { return errors_.size(); }

private:
    std::string origin_;
    ConfigErrors& errors_;
};

// A value inside a document, with its JSON pointer, for precise errors.
class JsonNode {
public:
    JsonNode(JsonReader& reader, const nlohmann::json& value, std::string pointer)
        : reader_(&reader), value_(&value), pointer_(std::move(pointer)) {}

    [[nodiscard]] const nlohmann::json& json() const { return *value_; }
    [[nodiscard]] const std::string& pointer() const { return pointer_; }
    [[nodiscard]] JsonReader& reader() const { return *reader_; }

    void error(std::string message, std::string hint = {}) const;
    // Records "missing required field KEY" on this object.
    void missing(std::string_view key) const;

    // Type checks that record an error when they fail.
    bool expect_object() const;
    bool expect_array() const;
    bool expect_string() const;

    // Records an error for every key not in `known`, suggesting the closest.
    void allow_fields(std::initializer_list<std::string_view> known) const;

    [[nodiscard]] std::optional<JsonNode> field(std::string_view key) const;
    [[nodiscard]] JsonNode element(std::size_t index) const;
    [[nodiscard]] std::vector<JsonNode> elements() const;                         // of an array
    [[nodiscard]] std::vector<std::pair<std::string, JsonNode>> members() const;  // of an object

    std::optional<std::string> string(std::string_view key, bool required) const;
    std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max, bool required) const;
    std::optional<bool> boolean(std::string_view key) const;
    // An array of non-empty strings.
    std::optional<std::vector<std::string>> string_array(std::string_view key, bool required) const;
    // One of `choices`; the error lists them all.
    std::optional<std::string> choice(std::string_view key, std::span<const std::string_view> choices,
                                      bool required) const;

private:
    JsonReader* reader_;
    const nlohmann::json* value_;
    std::string pointer_;
};

std::string json_pointer_escape(std::string_view key);
std::string_view json_type_name(const nlohmann::json& value);
// The candidate closest to `word` by edit distance, or "" when none is close.
std::string closest_match(std::string_view word, std::span<const std::string_view> candidates);

}  // namespace tameflare::policy
