#include "policy/params.h"

#include <vector>

namespace tameflare::policy {

namespace {

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

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

}  // namespace

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            const int high = hex_value(text[i + 1]);
            const int low = hex_value(text[i + 2]);
            if (high < 0 || low < 0) return std::nullopt;
            out += static_cast<char>(high * 16 + low);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return out;
}

bool parse_form(std::string_view text, nlohmann::json& out) {
    if (!out.is_object()) out = nlohmann::json::object();
    bool ok = true;
    while (!text.empty()) {
        const auto amp = text.find('&');
        const std::string_view pair = text.substr(0, amp);
        text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
        if (pair.empty()) continue;
        const auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq), true);
        auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
        if (!key || !value || key->empty()) {
            ok = false;
            continue;
        }
        const auto parts = split_form_key(*key);
        if (!parts || !insert_form_value(out, *parts, 0, std::move(*value))) ok = false;
    }
    return ok;
}

std::optional<nlohmann::json> parse_json_body(std::string_view body, int max_depth) {
    bool too_deep = false;
    const nlohmann::json::parser_callback_t limit_depth =
        [&too_deep, max_depth](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
            if (depth > max_depth) too_deep = true;
            return !too_deep;
        };
    auto value = nlohmann::json::parse(body.begin(), body.end(), limit_depth, /*allow_exceptions=*/false);
    if (too_deep || value.is_discarded()) return std::nullopt;
    return value;
}

}  // namespace tameflare::policy
