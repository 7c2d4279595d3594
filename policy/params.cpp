#include "policy/params.h"

#include "common/text.h"

#include <vector>

namespace tameflare::policy {

namespace {

// "items[0][price]" -> {"items", "0", "price"}; "d[]" -> {"d", ""}.
std::optional<std::vector<std::string>> split_form_key(const std::string& key) {
    std::vector<std::string> parts;
    const auto open = key.find('[');
    if (open == std::string::npos) {
        parts.push_back(key);
        return parts;
    }
    if (open == 0) return std::nullopt;
    parts.push_back(key.substr(0, open));
    std::size_t pos = open;
    while (pos < key.size()) {
        if (key[pos] != '[') return std::nullopt;
        const auto close = key.find(']', pos);
        if (close == std::string::npos) return std::nullopt;
        parts.push_back(key.substr(pos + 1, close - pos - 1));
        pos = close + 1;
        if (parts.size() > kMaxFormDepth + 1) return std::nullopt;
    }
    return parts;
}

// Adds `value` under `parts` into `node`; false on a shape clash.
bool insert_form_value(nlohmann::json& node, const std::vector<std::string>& parts, std::size_t index,
                       std::string value) {
    const std::string& part = parts[index];
    const bool last = index + 1 == parts.size();
    if (part.empty()) {  // "[]": append to an array
        if (node.is_null()) node = nlohmann::json::array();
        if (!node.is_array() || !last) return false;
        node.push_back(std::move(value));
        return true;
    }
    if (node.is_null()) node = nlohmann::json::object();
    if (!node.is_object()) return false;
    auto& child = node[part];
    if (!last) return insert_form_value(child, parts, index + 1, std::move(value));
    if (child.is_null()) {
        child = std::move(value);
    } else if (child.is_string()) {
        child = nlohmann::json::array({child, std::move(value)});
    } else if (child.is_array()) {
        child.push_back(std::move(value));
    } else {
        return false;
    }
    return true;
}

// Builds the DOM from nlohmann's SAX events and stops at `max_depth`, so a
// hostile body cannot nest deep enough for the recursive copy or dump of a
// json value to exhaust the stack.
class JsonBodyBuilder {
public:
    using json = nlohmann::json;
    explicit JsonBodyBuilder(int max_depth) : max_depth_(static_cast<std::size_t>(max_depth)) {}

    bool null() { return put(json()); }
    bool boolean(bool value) { return put(json(value)); }
    bool number_integer(json::number_integer_t value) { return put(json(value)); }
    bool number_unsigned(json::number_unsigned_t value) { return put(json(value)); }
    bool number_float(json::number_float_t value, const json::string_t&) { return put(json(value)); }
    bool string(json::string_t& value) { return put(json(std::move(value))); }
    bool binary(json::binary_t&) { return false; }
    bool start_object(std::size_t) { return open(json::object()); }
    bool key(json::string_t& name) {
        key_ = std::move(name);
        return true;
    }
    bool end_object() { return close(); }
    bool start_array(std::size_t) { return open(json::array()); }
    bool end_array() { return close(); }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

    json take() { return std::move(root_); }

private:
    // Places `value` where the parser is (array element, object member or root).
    json* place(json&& value) {
        if (stack_.empty()) {
            root_ = std::move(value);
            return &root_;
        }
        json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(value));
            return &parent.back();
        }
        auto& slot = parent[key_];
        slot = std::move(value);
        return &slot;
    }
    bool put(json&& value) {
        place(std::move(value));
        return true;
    }
    bool open(json&& container) {
        if (stack_.size() >= max_depth_) return false;
        stack_.push_back(place(std::move(container)));
        return true;
    }
    bool close() {
        stack_.pop_back();
        return true;
    }

    std::size_t max_depth_;
    json root_;
    std::vector<json*> stack_;
    std::string key_;
};

}  // namespace

bool parse_form(std::string_view text, nlohmann::json& out) {
    if (!out.is_object()) out = nlohmann::json::object();
    bool ok = true;
    for_each_form_pair(text, [&](std::string_view encoded_key, std::string_view encoded_value) {
        auto key = percent_decode(encoded_key, true);
        auto value = percent_decode(encoded_value, true);
        if (!key || !value || key->empty()) {
            ok = false;
            return;
        }
        const auto parts = split_form_key(*key);
        if (!parts || !insert_form_value(out, *parts, 0, std::move(*value))) ok = false;
    });
    return ok;
}

std::string dump_lossy(const nlohmann::json& value, int indent) {
    return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<nlohmann::json> parse_json_body(std::string_view body, int max_depth) {
    JsonBodyBuilder builder(max_depth);
    if (!nlohmann::json::sax_parse(body.begin(), body.end(), &builder, nlohmann::json::input_format_t::json, true)) {
        return std::nullopt;
    }
    return builder.take();
}

}  // namespace tameflare::policy
