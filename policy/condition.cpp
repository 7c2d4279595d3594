#include "policy/condition.h"

#include "policy/classify.h"
#include "policy/glob.h"
#include "policy/params.h"

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

constexpr std::array<std::pair<std::string_view, int>, 10> kTopFields{{
    {"action", 1},
    {"connector", 2},
    {"provider", 3},
    {"risk", 4},
    {"access", 5},
    {"method", 6},
    {"host", 7},
    {"path", 8},
    {"gateway", 9},
    {"agent", 10},
}};

using Value = FieldValue;

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
// `buffer` holds the text when it has to be made.
std::optional<std::string_view> as_text(const Value& value, std::string& buffer) {
    if (value.is_text()) return value.text;
    if (!value.json) return std::nullopt;
    if (value.json->is_string()) return std::string_view(value.json->get_ref<const std::string&>());
    if (value.json->is_number() || value.json->is_boolean()) {
        buffer = value.json->dump();
        return std::string_view(buffer);
    }
    return std::nullopt;
}

bool scalar_equals(const Value& value, const nlohmann::json& expected) {
    if (expected.is_number()) {
        const auto number = as_number(value);
        return number && *number == expected.get<double>();
    }
    if (expected.is_string() || expected.is_boolean()) {
        std::string buffer;
        const auto text = as_text(value, buffer);
        if (!text) return false;
        return expected.is_string() ? *text == expected.get_ref<const std::string&>()
                                    : *text == (expected.get<bool>() ? "true" : "false");
    }
    return value.json && *value.json == expected;
}

Truth from_bool(bool value) {
    return value ? Truth::yes : Truth::no;
}

Truth negate(Truth truth) {
    return truth == Truth::error ? Truth::error : truth == Truth::yes ? Truth::no : Truth::yes;
}

std::string describe_value(const Value& value) {
    if (!value.found) return "missing";
    if (value.is_text()) return "\"" + std::string(value.text) + "\"";
    std::string text = dump_lossy(*value.json);
    if (text.size() > 64) text = text.substr(0, 61) + "...";
    return text;
}

bool valid_parameter_path(std::string_view rest) {
    return !rest.empty() && rest.front() != '.' && rest.back() != '.' && rest.find("..") == std::string_view::npos;
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
    const std::size_t errors_before = node.reader().error_count();
    auto condition = load(node, 1, nodes);
    // Unknown keys are recorded without stopping the walk; they still fail the load.
    if (node.reader().error_count() != errors_before) return std::nullopt;
    return condition;
}

// One piece over 100 lines: one case per condition operator, each checked field by field with its own error and hint.
// NOLINTNEXTLINE(readability-function-size)
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
    const auto top =
        std::find_if(kTopFields.begin(), kTopFields.end(), [&](const auto& f) { return f.first == *field; });
    if (field->starts_with("parameters.") && valid_parameter_path(std::string_view(*field).substr(11))) {
        condition.source_ = Source::parameters;
        std::string_view rest = std::string_view(*field).substr(11);
        while (!rest.empty()) {
            const auto dot = rest.find('.');
            condition.keys_.emplace_back(rest.substr(0, dot));
            rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
        }
    } else if (top != kTopFields.end()) {
        condition.source_ = static_cast<Source>(top->second);
    } else {
        node.field("field")->error("unknown field \"" + *field + "\"",
                                   "use parameters.NAME (dotted for nested values) or one of action, connector, "
                                   "provider, risk, access, method, host, path, gateway, agent");
        return std::nullopt;
    }
    condition.field_ = std::move(*field);
    condition.op_ = std::find_if(kOps.begin(), kOps.end(), [&](const auto& o) { return o.first == *op; })->second;
    if (!value) {
        node.error("missing required field \"value\"", "give the value to compare with, e.g. \"value\": 10000");
        return std::nullopt;
    }
    condition.value_ = value->json();
    const auto& v = condition.value_;
    switch (condition.op_) {
        case Op::equals:
        case Op::not_equals:
            if (!(v.is_string() || v.is_number() || v.is_boolean())) {
                value->error(std::string(*op) + " compares with a string, number or boolean",
                             "use \"in\" to compare with a list of values");
                return std::nullopt;
            }
            break;
        case Op::in:
        case Op::not_in:
            if (!v.is_array() || v.empty() || !std::all_of(v.begin(), v.end(), [](const nlohmann::json& e) {
                    return e.is_string() || e.is_number() || e.is_boolean();
                })) {
                value->error(std::string(*op) + " needs a non-empty array of strings, numbers or booleans",
                             "e.g. \"value\": [\"main\", \"release\"]");
                return std::nullopt;
            }
            break;
        case Op::starts_with:
        case Op::ends_with:
        case Op::contains:
        case Op::glob:
            if (!v.is_string()) {
                value->error(std::string(*op) + " needs a string value", "put the value in double quotes");
                return std::nullopt;
            }
            break;
        case Op::matches: {
            if (!v.is_string()) {
                value->error("matches needs a string value (an RE2 regular expression)",
                             "e.g. \"value\": \"^release/[0-9]+$\"");
                return std::nullopt;
            }
            RE2::Options options;
            options.set_log_errors(false);
            options.set_max_mem(1 << 20);
            auto regex = std::make_shared<const re2::RE2>(v.get<std::string>(), options);
            if (!regex->ok()) {
                value->error(
                    "bad regular expression: " + regex->error(),
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
                value->error("exists needs true or false", "true: the field must be there; false: it must not");
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

FieldValue Condition::lookup(const Action& action, const ConditionFacts& facts) const {
    std::string_view text;
    switch (source_) {
        case Source::parameters: {
            const nlohmann::json* json = find_field(action.parameters, keys_);
            return Value{json, {}, json != nullptr};
        }
        case Source::action: text = action.type; break;
        case Source::connector: text = action.connector; break;
        case Source::provider: text = action.provider; break;
        case Source::risk: text = to_string(action.risk); break;
        case Source::access: text = to_string(action.access); break;
        case Source::method: text = action.method; break;
        case Source::host: text = action.host; break;
        case Source::path: text = action.path; break;
        case Source::gateway: text = facts.gateway; break;
        case Source::agent: text = facts.agent; break;
    }
    return Value{nullptr, text, true};
}

Truth Condition::evaluate_leaf(const Action& action, const ConditionFacts& facts) const {
    const Value value = lookup(action, facts);
    if (!value.found) {
        // A missing parameter of an incomplete body may be there after all.
        if (!action.parameters_complete && source_ == Source::parameters) return Truth::error;
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
            const bool found = std::any_of(value_.begin(), value_.end(), [&](const nlohmann::json& candidate) {
                return scalar_equals(value, candidate);
            });
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
            std::string buffer;
            const auto text = as_text(value, buffer);
            if (!text) return Truth::error;
            const auto& pattern = value_.get_ref<const std::string&>();
            switch (op_) {
                case Op::starts_with: return from_bool(text->starts_with(pattern));
                case Op::ends_with: return from_bool(text->ends_with(pattern));
                case Op::contains: return from_bool(text->find(pattern) != std::string::npos);
                case Op::glob: return from_bool(glob_match(pattern, *text));
                default:
                    return from_bool(re2::RE2::PartialMatch(re2::StringPiece(text->data(), text->size()), *regex_));
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

void Condition::collect_parameter_roots(std::vector<std::string>& out) const {
    if (kind_ != Kind::leaf) {
        for (const auto& child : children_) child.collect_parameter_roots(out);
        return;
    }
    if (source_ == Source::parameters && std::find(out.begin(), out.end(), keys_.front()) == out.end()) {
        out.push_back(keys_.front());
    }
}

std::string Condition::explain(const Action& action, const ConditionFacts& facts) const {
    if (kind_ == Kind::leaf) {
        const Value value = lookup(action, facts);
        std::string out =
            field_ + " " + std::string(to_string(op_)) + " " + value_.dump() + " (is " + describe_value(value) + ")";
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
