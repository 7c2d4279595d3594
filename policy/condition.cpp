#include "policy/condition.h"

#include "policy/classify.h"
#include "policy/glob.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

namespace tameflare::policy {

namespace {

constexpr std::array<std::pair<std::string_view, Condition::Op>, 14> kOps{{
    {"equals", Condition::Op::equals},
    {"not_equals", Condition::Op::not_equals},
    {"in", Condition::Op::in},
    {"not_in", Condition::Op::not_in},
    {"starts_with", Condition::Op::starts_with},
    {"ends_with", Condition::Op::ends_with},
    {"contains", Condition::Op::contains},
    {"glob", Condition::Op::glob},
    {"matches", Condition::Op::matches},
    {"gt", Condition::Op::gt},
    {"gte", Condition::Op::gte},
    {"lt", Condition::Op::lt},
    {"lte", Condition::Op::lte},
    {"exists", Condition::Op::exists},
}};

constexpr std::array<std::string_view, 10> kTopFields{"action",  "connector", "provider", "risk",  "access",
                                                      "method", "host",      "path",     "gateway", "agent"};

// A field's value: a JSON value inside the parameters, or a text fact.
struct Value {
    const nlohmann::json* json = nullptr;
    std::string_view text;
    bool found = false;
    bool is_text() const { return found && json == nullptr; }
};

Value lookup(const Action& action, const ConditionFacts& facts, const std::string& field) {
    if (field.starts_with("parameters.")) {
        const nlohmann::json* json = find_field(action.parameters, std::string_view(field).substr(11));
        return Value{json, {}, json != nullptr};
    }
    std::string_view text;
    if (field == "action") text = action.type;
    else if (field == "connector") text = action.connector;
    else if (field == "provider") text = action.provider;
    else if (field == "risk") text = to_string(action.risk);
    else if (field == "access") text = to_string(action.access);
    else if (field == "method") text = action.method;
    else if (field == "host") text = action.host;
    else if (field == "path") text = action.path;
    else if (field == "gateway") text = facts.gateway;
    else if (field == "agent") text = facts.agent;
    else return Value{};
    return Value{nullptr, text, true};
}

// Numbers: JSON numbers, or strings that are exactly a decimal number
// (no spaces, no hex, no inf/nan) - what an API would also read as one.
std::optional<double> as_number(const Value& value) {
    if (value.json && value.json->is_number()) return value.json->get<double>();
    std::string_view text;
    std::string owned;
    if (value.is_text()) {
        text = value.text;
    } else if (value.json && value.json->is_string()) {
        text = value.json->get_ref<const std::string&>();
    } else {
        return std::nullopt;
    }
    if (text.empty() || text.size() > 64) return std::nullopt;
    double result = 0;
    const char* begin = text.data();
    if (*begin == '+') return std::nullopt;
    const auto [end, error] = std::from_chars(begin, text.data() + text.size(), result, std::chars_format::general);
    if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(result)) return std::nullopt;
    return result;
}

// The text of a scalar value (strings as is, numbers and booleans as JSON).
std::optional<std::string> as_text(const Value& value) {
    if (value.is_text()) return std::string(value.text);
    if (!value.json) return std::nullopt;
    if (value.json->is_string()) return value.json->get<std::string>();
    if (value.json->is_number() || value.json->is_boolean()) return value.json->dump();
    return std::nullopt;
}

bool scalar_equals(const Value& value, const nlohmann::json& expected) {
    if (expected.is_number()) {
        const auto number = as_number(value);
        return number && *number == expected.get<double>();
    }
    if (expected.is_string() || expected.is_boolean()) {
        const auto text = as_text(value);
        return text && *text == (expected.is_string() ? expected.get<std::string>() : expected.dump());
    }
    return value.json && *value.json == expected;
}

Truth from_bool(bool value) { return value ? Truth::yes : Truth::no; }

Truth negate(Truth truth) {
    return truth == Truth::error ? Truth::error : truth == Truth::yes ? Truth::no : Truth::yes;
}

std::string describe_value(const Value& value) {
    if (!value.found) return "missing";
    if (value.is_text()) return "\"" + std::string(value.text) + "\"";
    std::string text = value.json->dump();
    if (text.size() > 64) text = text.substr(0, 61) + "...";
    return text;
}

bool valid_field(const std::string& field) {
    if (field.starts_with("parameters.")) {
        const std::string_view rest = std::string_view(field).substr(11);
        return !rest.empty() && rest.front() != '.' && rest.back() != '.' && rest.find("..") == std::string_view::npos;
    }
    return std::find(kTopFields.begin(), kTopFields.end(), field) != kTopFields.end();
}

}  // namespace

std::string_view to_string(Condition::Op op) noexcept {
    for (const auto& [name, value] : kOps) {
        if (value == op) return name;
    }
    return "?";
}

std::optional<Condition> Condition::load(const JsonNode& node) {
    int nodes = 0;
    return load(node, 1, nodes);
}

std::optional<Condition> Condition::load(const JsonNode& node, int depth, int& nodes) {
    if (!node.expect_object()) return std::nullopt;
    if (depth > kMaxDepth) {
        node.error("condition nested deeper than " + std::to_string(kMaxDepth) + " levels",
                   "flatten it: all/any take any number of conditions");
        return std::nullopt;
    }
    if (++nodes > kMaxNodes) {
        node.error("condition has more than " + std::to_string(kMaxNodes) + " parts", "split it into several policies");
        return std::nullopt;
    }
    Condition condition;
    for (const auto combinator : {"all", "any"}) {
        if (const auto list = node.field(combinator)) {
            node.allow_fields({combinator});
            condition.kind_ = std::string_view(combinator) == "all" ? Kind::all : Kind::any;
            if (!list->expect_array()) return std::nullopt;
            if (list->json().empty()) {
                list->error(std::string("empty \"") + combinator + "\"", "give at least one condition");
                return std::nullopt;
            }
            bool ok = true;
            for (const auto& item : list->elements()) {
                auto child = load(item, depth + 1, nodes);
                if (child) condition.children_.push_back(std::move(*child));
                ok = ok && child.has_value();
            }
            if (!ok) return std::nullopt;
            return condition;
        }
    }
    if (const auto inner = node.field("not")) {
        node.allow_fields({"not"});
        condition.kind_ = Kind::negate;
        auto child = load(*inner, depth + 1, nodes);
        if (!child) return std::nullopt;
        condition.children_.push_back(std::move(*child));
        return condition;
    }

    node.allow_fields({"field", "op", "value"});
    condition.kind_ = Kind::leaf;
    auto field = node.string("field", true);
    std::array<std::string_view, kOps.size()> names{};
    std::transform(kOps.begin(), kOps.end(), names.begin(), [](const auto& op) { return op.first; });
    const auto op = node.choice("op", names, true);
    const auto value = node.field("value");
    if (!field || !op) return std::nullopt;
    if (!valid_field(*field)) {
        node.field("field")->error("unknown field \"" + *field + "\"",
                                   "use parameters.NAME (dotted for nested values) or one of action, connector, "
                                   "provider, risk, access, method, host, path, gateway, agent");
        return std::nullopt;
    }
    condition.field_ = std::move(*field);
    condition.op_ = std::find_if(kOps.begin(), kOps.end(), [&](const auto& o) { return o.first == *op; })->second;
    if (!value) {
        node.error("missing required field \"value\"");
        return std::nullopt;
    }
    condition.value_ = value->json();
    const auto& v = condition.value_;
    switch (condition.op_) {
        case Op::equals:
        case Op::not_equals:
            if (!(v.is_string() || v.is_number() || v.is_boolean())) {
                value->error(std::string(*op) + " compares with a string, number or boolean");
                return std::nullopt;
            }
            break;
        case Op::in:
        case Op::not_in:
            if (!v.is_array() || v.empty() || !std::all_of(v.begin(), v.end(), [](const nlohmann::json& e) {
                    return e.is_string() || e.is_number() || e.is_boolean();
                })) {
                value->error(std::string(*op) + " needs a non-empty array of strings, numbers or booleans");
                return std::nullopt;
            }
            break;
        case Op::starts_with:
        case Op::ends_with:
        case Op::contains:
        case Op::glob:
            if (!v.is_string()) {
                value->error(std::string(*op) + " needs a string value");
                return std::nullopt;
            }
            break;
        case Op::matches: {
            if (!v.is_string()) {
                value->error("matches needs a string value (an RE2 regular expression)");
                return std::nullopt;
            }
            RE2::Options options;
            options.set_log_errors(false);
            options.set_max_mem(1 << 20);
            auto regex = std::make_shared<const re2::RE2>(v.get<std::string>(), options);
            if (!regex->ok()) {
                value->error("bad regular expression: " + regex->error(),
                             "RE2 syntax (no backreferences or lookaround); see https://github.com/google/re2/wiki/Syntax");
                return std::nullopt;
            }
            condition.regex_ = std::move(regex);
            break;
        }
        case Op::gt:
        case Op::gte:
        case Op::lt:
        case Op::lte:
            if (!v.is_number()) {
                value->error(std::string(*op) + " needs a number value", "write 10000, not \"10000\"");
                return std::nullopt;
            }
            break;
        case Op::exists:
            if (!v.is_boolean()) {
                value->error("exists needs true or false");
                return std::nullopt;
            }
            break;
    }
    return condition;
}

Truth Condition::evaluate(const Action& action, const ConditionFacts& facts) const {
    switch (kind_) {
        case Kind::all: {
            Truth result = Truth::yes;
            for (const auto& child : children_) {
                const Truth truth = child.evaluate(action, facts);
                if (truth == Truth::no) return Truth::no;
                if (truth == Truth::error) result = Truth::error;
            }
            return result;
        }
        case Kind::any: {
            Truth result = Truth::no;
            for (const auto& child : children_) {
                const Truth truth = child.evaluate(action, facts);
                if (truth == Truth::yes) return Truth::yes;
                if (truth == Truth::error) result = Truth::error;
            }
            return result;
        }
        case Kind::negate: return negate(children_.front().evaluate(action, facts));
        case Kind::leaf: return evaluate_leaf(action, facts);
    }
    return Truth::error;
}

Truth Condition::evaluate_leaf(const Action& action, const ConditionFacts& facts) const {
    const Value value = lookup(action, facts, field_);
    if (!value.found) {
        // A missing parameter of an incomplete body may be there after all.
        if (!action.parameters_complete && field_.starts_with("parameters.")) return Truth::error;
        switch (op_) {
            case Op::exists: return from_bool(!value_.get<bool>());
            case Op::not_equals:
            case Op::not_in: return Truth::yes;
            default: return Truth::no;
        }
    }
    switch (op_) {
        case Op::exists: return from_bool(value_.get<bool>());
        case Op::equals: return from_bool(scalar_equals(value, value_));
        case Op::not_equals: return from_bool(!scalar_equals(value, value_));
        case Op::in:
        case Op::not_in: {
            const bool found = std::any_of(value_.begin(), value_.end(),
                                           [&](const nlohmann::json& candidate) { return scalar_equals(value, candidate); });
            return from_bool(op_ == Op::in ? found : !found);
        }
        case Op::contains:
            if (value.json && value.json->is_array()) {
                return from_bool(std::any_of(value.json->begin(), value.json->end(), [&](const nlohmann::json& item) {
                    return scalar_equals(Value{&item, {}, true}, value_);
                }));
            }
            [[fallthrough]];
        case Op::starts_with:
        case Op::ends_with:
        case Op::glob:
        case Op::matches: {
            const auto text = as_text(value);
            if (!text) return Truth::error;
            const auto& pattern = value_.get_ref<const std::string&>();
            switch (op_) {
                case Op::starts_with: return from_bool(text->starts_with(pattern));
                case Op::ends_with: return from_bool(text->ends_with(pattern));
                case Op::contains: return from_bool(text->find(pattern) != std::string::npos);
                case Op::glob: return from_bool(glob_match(pattern, *text));
                default: return from_bool(re2::RE2::PartialMatch(*text, *regex_));
            }
        }
        case Op::gt:
        case Op::gte:
        case Op::lt:
        case Op::lte: {
            const auto number = as_number(value);
            if (!number) return Truth::error;
            const double limit = value_.get<double>();
            switch (op_) {
                case Op::gt: return from_bool(*number > limit);
                case Op::gte: return from_bool(*number >= limit);
                case Op::lt: return from_bool(*number < limit);
                default: return from_bool(*number <= limit);
            }
        }
    }
    return Truth::error;
}

std::string Condition::explain(const Action& action, const ConditionFacts& facts) const {
    if (kind_ == Kind::leaf) {
        const Value value = lookup(action, facts, field_);
        std::string out = field_ + " " + std::string(to_string(op_)) + " " + value_.dump() + " (is " +
                          describe_value(value) + ")";
        if (evaluate_leaf(action, facts) == Truth::error) out += " [cannot be decided]";
        return out;
    }
    if (kind_ == Kind::negate) return "not (" + children_.front().explain(action, facts) + ")";
    // For all/any, name the parts that made the result what it is.
    const Truth overall = evaluate(action, facts);
    std::string out;
    for (const auto& child : children_) {
        if (child.evaluate(action, facts) != overall) continue;
        if (!out.empty()) out += kind_ == Kind::all ? " and " : " or ";
        out += child.explain(action, facts);
    }
    return (kind_ == Kind::all ? "all(" : "any(") + out + ")";
}

}  // namespace tameflare::policy
