// Condition trees over an action: leaves compare one field, combinators
// all / any / not nest them to a bounded depth. Evaluation is three-valued:
// a comparison that cannot be decided (a missing parameter of an incomplete
// body, a number that is not a number) is an error, and an error denies.
#pragma once

#include "policy/action.h"
#include "policy/json_reader.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace re2 {
class RE2;
}

namespace tameflare::policy {

enum class Truth { no, yes, error };

// A field's value: a JSON value inside the parameters, or a text fact.
struct FieldValue {
    const nlohmann::json* json = nullptr;
    std::string_view text;
    bool found = false;
    [[nodiscard]] bool is_text() const { return found && json == nullptr; }
};

// Facts about the request that are not part of the action itself.
struct ConditionFacts {
    std::string_view gateway;
    std::string_view agent;
};

class Condition {
public:
    enum class Kind { all, any, negate, leaf };
    enum class Op {
        equals,
        not_equals,
        in,
        not_in,
        starts_with,
        ends_with,
        contains,
        glob,
        matches,
        gt,
        gte,
        lt,
        lte,
        exists
    };

    static constexpr int kMaxDepth = 8;
    static constexpr int kMaxNodes = 256;

    // Reads a condition; records errors and returns nullopt on bad input.
    static std::optional<Condition> load(const JsonNode& node);

    [[nodiscard]] Truth evaluate(const Action& action, const ConditionFacts& facts) const;
    // Adds the first key of every parameters.* field it reads ("amount" for
    // parameters.amount, "metadata" for parameters.metadata.order).
    void collect_parameter_roots(std::vector<std::string>& out) const;
    // A one-line account of why the condition holds (or could not be decided).
    [[nodiscard]] std::string explain(const Action& action, const ConditionFacts& facts) const;

private:
    static std::optional<Condition> load(const JsonNode& node, int depth, int& nodes);
    [[nodiscard]] Truth evaluate_leaf(const Action& action, const ConditionFacts& facts) const;
    [[nodiscard]] FieldValue lookup(const Action& action, const ConditionFacts& facts) const;

    Kind kind_ = Kind::leaf;
    std::vector<Condition> children_;
    Op op_ = Op::equals;
    std::string field_;  // as written, for explanations
    // The field, resolved once at load: where it comes from and, for
    // parameters, the keys of its dotted path.
    enum class Source { parameters, action, connector, provider, risk, access, method, host, path, gateway, agent };
    Source source_ = Source::parameters;
    std::vector<std::string> keys_;
    nlohmann::json value_;
    std::shared_ptr<const re2::RE2> regex_;
};

std::string_view to_string(Condition::Op op) noexcept;

}  // namespace tameflare::policy
