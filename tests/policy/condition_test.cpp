// Condition trees: loading (with precise errors), three-valued evaluation and
// explanations. Conditions are loaded from JSON text the way a gateway file
// carries them, and evaluated against actions built here.
#include "policy/condition.h"
#include "policy/action.h"
#include "policy/config_error.h"
#include "policy/json_reader.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace tameflare::policy {
namespace {

using nlohmann::json;

struct Loaded {
    ConfigErrors errors;
    std::optional<Condition> condition;
};

Loaded load_text(std::string_view text) {
    Loaded out;
    JsonReader reader("test.json", out.errors);
    const auto parsed = reader.parse(text);
    if (!parsed) {
        ADD_FAILURE() << "test JSON does not parse: " << text;
        return out;
    }
    out.condition = Condition::load(JsonNode(reader, *parsed, ""));
    return out;
}

Loaded load(const json& value) {
    return load_text(value.dump());
}

// Loads a condition that must be valid.
Condition must_load_text(std::string_view text) {
    auto loaded = load_text(text);
    EXPECT_TRUE(loaded.errors.empty()) << format_errors(loaded.errors);
    if (!loaded.condition) {
        ADD_FAILURE() << "condition did not load: " << text;
        return Condition();
    }
    return std::move(*loaded.condition);
}

Condition must_load(const json& value) {
    return must_load_text(value.dump());
}

Condition leaf(std::string_view field, std::string_view op, const json& value) {
    return must_load(json{{"field", field}, {"op", op}, {"value", value}});
}

Action refund(json parameters = json::object(), bool complete = true) {
    Action action;
    action.connector = "pay";
    action.provider = "stripe";
    action.type = "stripe.refund.create";
    action.risk = Risk::medium;
    action.access = Access::write;
    action.parameters = std::move(parameters);
    action.parameters_complete = complete;
    action.route = "POST /v1/refunds";
    action.method = "POST";
    action.host = "api.stripe.com";
    action.path = "/v1/refunds";
    return action;
}

const ConditionFacts kFacts{"payments-bot", "agent-7"};

Truth eval(const Condition& condition, const Action& action) {
    return condition.evaluate(action, kFacts);
}

Truth eval_param(std::string_view op, const json& value, const json& parameter) {
    return eval(leaf("parameters.x", op, value), refund(json{{"x", parameter}}));
}

// The one error a bad condition must produce (at least one; the first that
// matches `pointer` is returned).
const ConfigError* error_at(const ConfigErrors& errors, std::string_view pointer) {
    for (const auto& error : errors) {
        if (error.pointer == pointer) return &error;
    }
    return nullptr;
}

std::string all_errors(const ConfigErrors& errors) {
    return format_errors(errors);
}

// ---------------------------------------------------------------------------
// Operators

TEST(Condition, EqualsHoldsForTheSameStringOnly) {
    EXPECT_EQ(eval_param("equals", "closed", "closed"), Truth::yes);
    EXPECT_EQ(eval_param("equals", "closed", "open"), Truth::no);
    EXPECT_EQ(eval_param("equals", "closed", "Closed"), Truth::no);
}

TEST(Condition, EqualsOnANumberComparesNumerically) {
    EXPECT_EQ(eval_param("equals", 20000, 20000), Truth::yes);
    EXPECT_EQ(eval_param("equals", 20000, 20000.0), Truth::yes);
    EXPECT_EQ(eval_param("equals", 20000, "20000"), Truth::yes);
    EXPECT_EQ(eval_param("equals", 20000, "2e4"), Truth::yes);
    EXPECT_EQ(eval_param("equals", 20000, 20001), Truth::no);
    EXPECT_EQ(eval_param("equals", 20000, "twenty thousand"), Truth::no);
}

TEST(Condition, BooleansEqualTheirJsonText) {
    EXPECT_EQ(eval_param("equals", true, true), Truth::yes);
    EXPECT_EQ(eval_param("equals", true, "true"), Truth::yes);
    EXPECT_EQ(eval_param("equals", "true", true), Truth::yes);
    EXPECT_EQ(eval_param("equals", false, false), Truth::yes);
    EXPECT_EQ(eval_param("equals", false, "false"), Truth::yes);
    EXPECT_EQ(eval_param("equals", false, true), Truth::no);
    EXPECT_EQ(eval_param("equals", true, "yes"), Truth::no);
    EXPECT_EQ(eval_param("equals", true, 1), Truth::no);
}

TEST(Condition, NotEqualsIsTheOppositeOfEquals) {
    EXPECT_EQ(eval_param("not_equals", "closed", "open"), Truth::yes);
    EXPECT_EQ(eval_param("not_equals", "closed", "closed"), Truth::no);
    EXPECT_EQ(eval_param("not_equals", 5, "5"), Truth::no);
    EXPECT_EQ(eval_param("not_equals", 5, 6), Truth::yes);
}

TEST(Condition, InHoldsWhenAnyCandidateEquals) {
    const json candidates{"infra", "infra.git", 7, true};
    EXPECT_EQ(eval_param("in", candidates, "infra"), Truth::yes);
    EXPECT_EQ(eval_param("in", candidates, "infra.git"), Truth::yes);
    EXPECT_EQ(eval_param("in", candidates, "7"), Truth::yes);
    EXPECT_EQ(eval_param("in", candidates, 7), Truth::yes);
    EXPECT_EQ(eval_param("in", candidates, "true"), Truth::yes);
    EXPECT_EQ(eval_param("in", candidates, "infrastructure"), Truth::no);
    EXPECT_EQ(eval_param("in", candidates, 8), Truth::no);
}

TEST(Condition, NotInHoldsWhenNoCandidateEquals) {
    const json candidates{"C0SUPPORT", "C0OPS"};
    EXPECT_EQ(eval_param("not_in", candidates, "C0RANDOM"), Truth::yes);
    EXPECT_EQ(eval_param("not_in", candidates, "C0SUPPORT"), Truth::no);
    EXPECT_EQ(eval_param("not_in", candidates, "C0OPS"), Truth::no);
}

TEST(Condition, StartsWithComparesThePrefix) {
    EXPECT_EQ(eval_param("starts_with", "refs/heads/", "refs/heads/main"), Truth::yes);
    EXPECT_EQ(eval_param("starts_with", "refs/heads/", "refs/tags/v1"), Truth::no);
    EXPECT_EQ(eval_param("starts_with", "refs/heads/", "refs/"), Truth::no);
}

TEST(Condition, EndsWithComparesTheSuffix) {
    EXPECT_EQ(eval_param("ends_with", ".git", "infra.git"), Truth::yes);
    EXPECT_EQ(eval_param("ends_with", ".git", "infra.github"), Truth::no);
    EXPECT_EQ(eval_param("ends_with", ".git", "git"), Truth::no);
}

TEST(Condition, ContainsOnAStringLooksForASubstring) {
    EXPECT_EQ(eval_param("contains", "lo wo", "hello world"), Truth::yes);
    EXPECT_EQ(eval_param("contains", "hello world", "hello world"), Truth::yes);
    EXPECT_EQ(eval_param("contains", "xyz", "hello world"), Truth::no);
}

TEST(Condition, ContainsOnAnArrayLooksForAnElement) {
    const json labels{"bug", "security", "p1"};
    EXPECT_EQ(eval_param("contains", "security", labels), Truth::yes);
    EXPECT_EQ(eval_param("contains", "secur", labels), Truth::no);  // elements, not substrings
    EXPECT_EQ(eval_param("contains", "docs", labels), Truth::no);
    EXPECT_EQ(eval_param("contains", "2", json{1, 2, 3}), Truth::yes);
    EXPECT_EQ(eval_param("contains", "anything", json::array()), Truth::no);
}

TEST(Condition, GlobMatchesTheWholeValue) {
    const Action action = refund();
    EXPECT_EQ(eval(leaf("action", "glob", "stripe.*.create"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("action", "glob", "stripe.refund.*"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("action", "glob", "stripe.refund"), action), Truth::no);
    EXPECT_EQ(eval(leaf("action", "glob", "github.*"), action), Truth::no);
    EXPECT_EQ(eval(leaf("host", "glob", "api.?tripe.com"), action), Truth::yes);
}

TEST(Condition, MatchesIsAnUnanchoredRe2Search) {
    const Action action = refund();
    EXPECT_EQ(eval(leaf("host", "matches", "stripe"), action), Truth::yes);  // a search, not a full match
    EXPECT_EQ(eval(leaf("host", "matches", "\\.com$"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("host", "matches", "^stripe"), action), Truth::no);
    EXPECT_EQ(eval(leaf("path", "matches", "^/v1/(refunds|charges)$"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("path", "matches", "^/v2/"), action), Truth::no);
}

TEST(Condition, MatchesOnANumberUsesItsJsonText) {
    EXPECT_EQ(eval_param("matches", "^[0-9]{5}$", 20000), Truth::yes);
    EXPECT_EQ(eval_param("matches", "^[0-9]{4}$", 20000), Truth::no);
}

TEST(Condition, MatchesRunsInLinearTimeOnABacktrackingTrap) {
    // With a backtracking engine this takes 2^30 steps; RE2 answers at once.
    const std::string input = std::string(30, 'a') + "b";
    EXPECT_EQ(eval_param("matches", "(a+)+$", input), Truth::no);
    EXPECT_EQ(eval_param("matches", "^(a+)+b$", input), Truth::yes);
    EXPECT_EQ(eval_param("matches", "(a|aa)+$", input), Truth::no);
}

TEST(Condition, GtAndGteCompareNumbers) {
    EXPECT_EQ(eval_param("gt", 10000, 10001), Truth::yes);
    EXPECT_EQ(eval_param("gt", 10000, 10000), Truth::no);
    EXPECT_EQ(eval_param("gt", 10000, 9999.5), Truth::no);
    EXPECT_EQ(eval_param("gte", 10000, 10000), Truth::yes);
    EXPECT_EQ(eval_param("gte", 10000, 9999), Truth::no);
    EXPECT_EQ(eval_param("gt", 0.5, 0.75), Truth::yes);
    EXPECT_EQ(eval_param("gt", -10, -5), Truth::yes);
}

TEST(Condition, LtAndLteCompareNumbers) {
    EXPECT_EQ(eval_param("lt", 100, 99), Truth::yes);
    EXPECT_EQ(eval_param("lt", 100, 100), Truth::no);
    EXPECT_EQ(eval_param("lte", 100, 100), Truth::yes);
    EXPECT_EQ(eval_param("lte", 100, 100.01), Truth::no);
    EXPECT_EQ(eval_param("lt", 0, -0.5), Truth::yes);
}

TEST(Condition, GtOnANumericStringComparesAsNumber) {
    // Form bodies and query strings carry numbers as strings.
    EXPECT_EQ(eval_param("gt", 10000, "20000"), Truth::yes);
    EXPECT_EQ(eval_param("gt", 10000, "9999"), Truth::no);  // not a string comparison ("9" > "1")
    EXPECT_EQ(eval_param("lt", 0, "-5"), Truth::yes);
    EXPECT_EQ(eval_param("gte", 1000, "1.5e3"), Truth::yes);
    EXPECT_EQ(eval_param("lte", 10, "10.0"), Truth::yes);
}

TEST(Condition, StringsThatAreNotStrictlyNumbersCannotBeCompared) {
    for (const char* text : {" 20000", "20000 ", "0x10", "1e400", "-1e400", "inf", "-inf", "nan", "+5", "", "abc",
                             "12abc", "1,000", "١٢"}) {
        SCOPED_TRACE(std::string("value: \"") + text + "\"");
        EXPECT_EQ(eval_param("gt", 1, text), Truth::error);
        EXPECT_EQ(eval_param("gte", 1, text), Truth::error);
        EXPECT_EQ(eval_param("lt", 1, text), Truth::error);
        EXPECT_EQ(eval_param("lte", 1, text), Truth::error);
    }
}

TEST(Condition, GtOnAValueThatIsNoNumberAtAllIsAnError) {
    EXPECT_EQ(eval_param("gt", 1, true), Truth::error);
    EXPECT_EQ(eval_param("gt", 1, json::object({{"a", 1}})), Truth::error);
    EXPECT_EQ(eval_param("gt", 1, json::array({5})), Truth::error);
    EXPECT_EQ(eval_param("gt", 1, nullptr), Truth::error);
    EXPECT_EQ(eval(leaf("method", "gt", 1), refund()), Truth::error);
}

TEST(Condition, ExistsTrueHoldsWhenTheParameterIsPresent) {
    const Condition condition = leaf("parameters.sha", "exists", true);
    EXPECT_EQ(eval(condition, refund(json{{"sha", "abc"}})), Truth::yes);
    EXPECT_EQ(eval(condition, refund(json{{"sha", nullptr}})), Truth::yes);
    EXPECT_EQ(eval(condition, refund(json{{"other", "abc"}})), Truth::no);
}

TEST(Condition, ExistsFalseHoldsWhenTheParameterIsAbsent) {
    const Condition condition = leaf("parameters.sha", "exists", false);
    EXPECT_EQ(eval(condition, refund(json{{"other", "abc"}})), Truth::yes);
    EXPECT_EQ(eval(condition, refund(json{{"sha", "abc"}})), Truth::no);
}

// ---------------------------------------------------------------------------
// Missing parameters

TEST(Condition, AMissingParameterOfACompleteBodyIsDecided) {
    const Action action = refund(json{{"amount", 5}});
    EXPECT_EQ(eval(leaf("parameters.currency", "equals", "usd"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "not_equals", "usd"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.currency", "in", json{"usd"}), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "not_in", json{"usd"}), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.currency", "starts_with", "u"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "ends_with", "d"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "contains", "s"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "glob", "*"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "matches", ".*"), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "gt", 0), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "lte", 0), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "exists", true), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.currency", "exists", false), action), Truth::yes);
}

TEST(Condition, AMissingParameterOfAnIncompleteBodyCannotBeDecided) {
    const Action action = refund(json{{"amount", 5}}, /*complete=*/false);
    EXPECT_EQ(eval(leaf("parameters.currency", "equals", "usd"), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "not_equals", "usd"), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "in", json{"usd"}), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "not_in", json{"usd"}), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "contains", "s"), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "matches", "x"), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "gt", 0), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "exists", true), action), Truth::error);
    EXPECT_EQ(eval(leaf("parameters.currency", "exists", false), action), Truth::error);
}

TEST(Condition, APresentParameterOfAnIncompleteBodyIsStillDecided) {
    const Action action = refund(json{{"amount", 20000}}, /*complete=*/false);
    EXPECT_EQ(eval(leaf("parameters.amount", "gt", 10000), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.amount", "lt", 10000), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.amount", "exists", true), action), Truth::yes);
    EXPECT_EQ(eval(leaf("action", "equals", "stripe.refund.create"), action), Truth::yes);
}

// ---------------------------------------------------------------------------
// Fields

TEST(Condition, TopLevelFieldsReadTheActionAndTheFacts) {
    const Action action = refund();
    EXPECT_EQ(eval(leaf("action", "equals", "stripe.refund.create"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("connector", "equals", "pay"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("provider", "equals", "stripe"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("risk", "equals", "medium"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("access", "equals", "write"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("method", "equals", "POST"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("host", "equals", "api.stripe.com"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("path", "equals", "/v1/refunds"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("gateway", "equals", "payments-bot"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("agent", "equals", "agent-7"), action), Truth::yes);
}

TEST(Condition, TopLevelFieldsAreNotConfusedWithEachOther) {
    const Action action = refund();
    EXPECT_EQ(eval(leaf("connector", "equals", "stripe"), action), Truth::no);  // instance "pay", provider "stripe"
    EXPECT_EQ(eval(leaf("provider", "equals", "pay"), action), Truth::no);
    EXPECT_EQ(eval(leaf("risk", "in", json{"low", "high"}), action), Truth::no);
    EXPECT_EQ(eval(leaf("access", "equals", "read"), action), Truth::no);
    EXPECT_EQ(eval(leaf("gateway", "equals", "agent-7"), action), Truth::no);
    EXPECT_EQ(eval(leaf("agent", "equals", "payments-bot"), action), Truth::no);
}

TEST(Condition, TopLevelFieldsFollowTheAction) {
    Action action = refund();
    action.risk = Risk::high;
    action.access = Access::read;
    EXPECT_EQ(eval(leaf("risk", "equals", "high"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("access", "equals", "read"), action), Truth::yes);
    const ConditionFacts other{"ci", "runner"};
    EXPECT_EQ(leaf("gateway", "equals", "ci").evaluate(action, other), Truth::yes);
    EXPECT_EQ(leaf("agent", "equals", "runner").evaluate(action, other), Truth::yes);
}

TEST(Condition, DottedPathsReachIntoNestedObjectsAndArrays) {
    const Action action =
        refund(json{{"metadata", {{"order", "7"}}}, {"items", json::array({{{"price", 100}}, {{"price", 250}}})}});
    EXPECT_EQ(eval(leaf("parameters.metadata.order", "equals", "7"), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.metadata.order", "equals", 7), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.items.0.price", "equals", 100), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.items.1.price", "gt", 200), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.items.2.price", "exists", true), action), Truth::no);
    EXPECT_EQ(eval(leaf("parameters.metadata.missing", "exists", false), action), Truth::yes);
    EXPECT_EQ(eval(leaf("parameters.metadata.order.deeper", "exists", true), action), Truth::no);
}

TEST(Condition, DottedPathsReachIntoFormStyleNesting) {
    // items[0][price]=250 in a form body becomes {"items": {"0": {"price": "250"}}}.
    const Action action = refund(json{{"items", {{"0", {{"price", "250"}}}}}});
    EXPECT_EQ(eval(leaf("parameters.items.0.price", "gt", 200), action), Truth::yes);
}

// ---------------------------------------------------------------------------
// Combinators and three-valued logic

const json kYes{{"field", "action"}, {"op", "equals"}, {"value", "stripe.refund.create"}};
const json kNo{{"field", "action"}, {"op", "equals"}, {"value", "stripe.charge.create"}};
const json kError{{"field", "parameters.amount"}, {"op", "gt"}, {"value", 1}};  // amount is "abc" below

Action kleene_action() {
    return refund(json{{"amount", "abc"}});
}

Truth combine(std::string_view combinator, std::initializer_list<json> parts) {
    json list = json::array();
    for (const auto& part : parts) list.push_back(part);
    json condition = json::object();
    condition[std::string(combinator)] = list;
    return eval(must_load(condition), kleene_action());
}

TEST(Condition, TheLeavesUsedForKleeneLogicAreYesNoAndError) {
    EXPECT_EQ(eval(must_load(kYes), kleene_action()), Truth::yes);
    EXPECT_EQ(eval(must_load(kNo), kleene_action()), Truth::no);
    EXPECT_EQ(eval(must_load(kError), kleene_action()), Truth::error);
}

TEST(Condition, AllHoldsWhenEveryPartHolds) {
    EXPECT_EQ(combine("all", {kYes}), Truth::yes);
    EXPECT_EQ(combine("all", {kYes, kYes, kYes}), Truth::yes);
    EXPECT_EQ(combine("all", {kYes, kNo}), Truth::no);
    EXPECT_EQ(combine("all", {kNo, kYes}), Truth::no);
}

TEST(Condition, AllWithAnErrorIsNoWhenAnotherPartIsNo) {
    EXPECT_EQ(combine("all", {kNo, kError}), Truth::no);
    EXPECT_EQ(combine("all", {kError, kNo}), Truth::no);
    EXPECT_EQ(combine("all", {kYes, kError, kNo}), Truth::no);
}

TEST(Condition, AllWithAnErrorAndOtherwiseYesIsAnError) {
    EXPECT_EQ(combine("all", {kYes, kError}), Truth::error);
    EXPECT_EQ(combine("all", {kError, kYes}), Truth::error);
    EXPECT_EQ(combine("all", {kError}), Truth::error);
}

TEST(Condition, AnyHoldsWhenOnePartHolds) {
    EXPECT_EQ(combine("any", {kNo, kYes}), Truth::yes);
    EXPECT_EQ(combine("any", {kYes}), Truth::yes);
    EXPECT_EQ(combine("any", {kNo}), Truth::no);
    EXPECT_EQ(combine("any", {kNo, kNo, kNo}), Truth::no);
}

TEST(Condition, AnyWithAnErrorIsYesWhenAnotherPartIsYes) {
    EXPECT_EQ(combine("any", {kYes, kError}), Truth::yes);
    EXPECT_EQ(combine("any", {kError, kYes}), Truth::yes);
    EXPECT_EQ(combine("any", {kNo, kError, kYes}), Truth::yes);
}

TEST(Condition, AnyWithAnErrorAndOtherwiseNoIsAnError) {
    EXPECT_EQ(combine("any", {kNo, kError}), Truth::error);
    EXPECT_EQ(combine("any", {kError, kNo}), Truth::error);
    EXPECT_EQ(combine("any", {kError}), Truth::error);
}

TEST(Condition, NotInvertsYesAndNoButKeepsAnError) {
    EXPECT_EQ(eval(must_load(json{{"not", kYes}}), kleene_action()), Truth::no);
    EXPECT_EQ(eval(must_load(json{{"not", kNo}}), kleene_action()), Truth::yes);
    EXPECT_EQ(eval(must_load(json{{"not", kError}}), kleene_action()), Truth::error);
    EXPECT_EQ(eval(must_load(json{{"not", {{"not", kYes}}}}), kleene_action()), Truth::yes);
}

TEST(Condition, NotOfAMissingParameterOfAnIncompleteBodyStaysUndecided) {
    // A deny policy "when not channel in [support]" must not pass a request whose
    // channel could not be read.
    const Condition condition =
        must_load_text(R"({"not": {"field": "parameters.channel", "op": "in", "value": ["C0SUPPORT"]}})");
    EXPECT_EQ(eval(condition, refund(json::object(), /*complete=*/false)), Truth::error);
    EXPECT_EQ(eval(condition, refund(json::object(), /*complete=*/true)), Truth::yes);
    EXPECT_EQ(eval(condition, refund(json{{"channel", "C0SUPPORT"}}, false)), Truth::no);
}

TEST(Condition, CombinatorsNest) {
    const Condition condition = must_load_text(R"({"all": [
        {"field": "provider", "op": "equals", "value": "stripe"},
        {"any": [
            {"field": "parameters.amount", "op": "gt", "value": 10000},
            {"field": "parameters.currency", "op": "not_in", "value": ["usd", "eur"]}
        ]},
        {"not": {"field": "agent", "op": "starts_with", "value": "trusted-"}}
    ]})");
    EXPECT_EQ(eval(condition, refund(json{{"amount", 20000}, {"currency", "usd"}})), Truth::yes);
    EXPECT_EQ(eval(condition, refund(json{{"amount", 50}, {"currency", "usd"}})), Truth::no);
    EXPECT_EQ(eval(condition, refund(json{{"amount", 50}, {"currency", "jpy"}})), Truth::yes);
    EXPECT_EQ(condition.evaluate(refund(json{{"amount", 20000}}), ConditionFacts{"g", "trusted-1"}), Truth::no);
}

// ---------------------------------------------------------------------------
// Explanations

TEST(Condition, ExplainNamesTheFieldTheOperatorAndTheActualValue) {
    const std::string text = leaf("parameters.amount", "gt", 10000).explain(refund(json{{"amount", 20000}}), kFacts);
    EXPECT_NE(text.find("parameters.amount"), std::string::npos) << text;
    EXPECT_NE(text.find("gt"), std::string::npos) << text;
    EXPECT_NE(text.find("10000"), std::string::npos) << text;
    EXPECT_NE(text.find("20000"), std::string::npos) << text;
    EXPECT_EQ(text.find("cannot be decided"), std::string::npos) << text;
}

TEST(Condition, ExplainSaysWhenAValueIsMissingOrUndecidable) {
    const Condition condition = leaf("parameters.amount", "gt", 10000);
    const std::string missing = condition.explain(refund(json::object()), kFacts);
    EXPECT_NE(missing.find("missing"), std::string::npos) << missing;
    const std::string undecided = condition.explain(refund(json::object(), false), kFacts);
    EXPECT_NE(undecided.find("cannot be decided"), std::string::npos) << undecided;
    const std::string bad_number = condition.explain(refund(json{{"amount", "0x10"}}), kFacts);
    EXPECT_NE(bad_number.find("cannot be decided"), std::string::npos) << bad_number;
    EXPECT_NE(bad_number.find("0x10"), std::string::npos) << bad_number;
}

TEST(Condition, ExplainOfAllNamesThePartThatFailed) {
    const Condition condition = must_load_text(R"({"all": [
        {"field": "provider", "op": "equals", "value": "stripe"},
        {"field": "parameters.amount", "op": "gt", "value": 10000}]})");
    const std::string text = condition.explain(refund(json{{"amount", 5}}), kFacts);
    EXPECT_EQ(text.rfind("all(", 0), 0u) << text;
    EXPECT_NE(text.find("parameters.amount"), std::string::npos) << text;
    EXPECT_EQ(text.find("provider"), std::string::npos) << text;  // it held; it did not decide
}

TEST(Condition, ExplainOfAnyNamesThePartThatHeld) {
    const Condition condition = must_load_text(R"({"any": [
        {"field": "provider", "op": "equals", "value": "github"},
        {"field": "parameters.amount", "op": "gt", "value": 10000}]})");
    const std::string text = condition.explain(refund(json{{"amount", 20000}}), kFacts);
    EXPECT_EQ(text.rfind("any(", 0), 0u) << text;
    EXPECT_NE(text.find("parameters.amount"), std::string::npos) << text;
    EXPECT_EQ(text.find("provider"), std::string::npos) << text;
}

TEST(Condition, ExplainOfNotWrapsItsPart) {
    const Condition condition =
        must_load_text(R"({"not": {"field": "parameters.channel", "op": "in", "value": ["C0SUPPORT"]}})");
    const std::string text = condition.explain(refund(json{{"channel", "C0RANDOM"}}), kFacts);
    EXPECT_EQ(text.rfind("not (", 0), 0u) << text;
    EXPECT_NE(text.find("C0RANDOM"), std::string::npos) << text;
}

// ---------------------------------------------------------------------------
// Load errors

TEST(Condition, LoadsEveryOperatorWithAValueOfTheRightType) {
    for (const auto& [op, value] : std::initializer_list<std::pair<const char*, json>>{{"equals", "x"},
                                                                                       {"equals", 1},
                                                                                       {"equals", true},
                                                                                       {"not_equals", "x"},
                                                                                       {"in", {"a", 1, false}},
                                                                                       {"not_in", {"a"}},
                                                                                       {"starts_with", "a"},
                                                                                       {"ends_with", "a"},
                                                                                       {"contains", "a"},
                                                                                       {"glob", "a.*"},
                                                                                       {"matches", "^a+$"},
                                                                                       {"gt", 1},
                                                                                       {"gte", 1.5},
                                                                                       {"lt", -1},
                                                                                       {"lte", 0},
                                                                                       {"exists", true},
                                                                                       {"exists", false}}) {
        SCOPED_TRACE(std::string(op) + " " + value.dump());
        const auto loaded = load(json{{"field", "parameters.x"}, {"op", op}, {"value", value}});
        EXPECT_TRUE(loaded.condition.has_value());
        EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded.errors);
    }
}

TEST(Condition, ABadRegexIsRefusedWithAnErrorAboutTheRegex) {
    const auto loaded = load_text(R"({"field": "host", "op": "matches", "value": "(unclosed"})");
    EXPECT_FALSE(loaded.condition.has_value());
    const ConfigError* error = error_at(loaded.errors, "/value");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_EQ(error->file, "test.json");
    EXPECT_NE(error->message.find("regular expression"), std::string::npos) << error->message;
    EXPECT_NE(error->hint.find("RE2"), std::string::npos) << error->hint;
}

TEST(Condition, RegexFeaturesRe2LacksAreRefused) {
    for (const char* pattern : {"(a)\\1", "(?=a)b", "(?<!a)b"}) {
        SCOPED_TRACE(pattern);
        const auto loaded = load(json{{"field", "host"}, {"op", "matches"}, {"value", pattern}});
        EXPECT_FALSE(loaded.condition.has_value());
        EXPECT_NE(error_at(loaded.errors, "/value"), nullptr) << all_errors(loaded.errors);
    }
}

TEST(Condition, AValueOfTheWrongTypeIsRefusedForEveryOperatorFamily) {
    const std::initializer_list<std::pair<const char*, json>> cases{
        {"equals", json::object()},
        {"equals", json::array({"a"})},
        {"equals", nullptr},
        {"not_equals", json::object()},
        {"in", "a"},
        {"in", json::array()},
        {"in", json::array({json::object()})},
        {"not_in", 5},
        {"not_in", json::array({json::array()})},
        {"starts_with", 5},
        {"ends_with", true},
        {"contains", json::array({"a"})},
        {"glob", 1},
        {"matches", 1},
        {"gt", "10000"},
        {"gte", true},
        {"lt", json::array({1})},
        {"lte", nullptr},
        {"exists", "yes"},
        {"exists", 1},
    };
    for (const auto& [op, value] : cases) {
        SCOPED_TRACE(std::string(op) + " " + value.dump());
        const auto loaded = load(json{{"field", "parameters.x"}, {"op", op}, {"value", value}});
        EXPECT_FALSE(loaded.condition.has_value());
        const ConfigError* error = error_at(loaded.errors, "/value");
        ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
        EXPECT_NE(error->message.find(op), std::string::npos) << error->message;
        EXPECT_FALSE(error->hint.empty()) << error->to_string();
    }
}

TEST(Condition, AQuotedNumberForGtIsRefusedWithAHintToDropTheQuotes) {
    const auto loaded = load_text(R"({"field": "parameters.amount", "op": "gt", "value": "10000"})");
    EXPECT_FALSE(loaded.condition.has_value());
    const ConfigError* error = error_at(loaded.errors, "/value");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->hint.find("10000"), std::string::npos) << error->hint;
}

TEST(Condition, AnUnknownOperatorIsRefusedWithADidYouMeanHint) {
    const auto loaded = load_text(R"({"field": "parameters.state", "op": "equal", "value": "closed"})");
    EXPECT_FALSE(loaded.condition.has_value());
    const ConfigError* error = error_at(loaded.errors, "/op");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->message.find("equal"), std::string::npos) << error->message;
    EXPECT_NE(error->hint.find("did you mean \"equals\""), std::string::npos) << error->hint;
}

TEST(Condition, AnUnknownOperatorFarFromAnyListsTheKnownOnes) {
    const auto loaded = load_text(R"({"field": "parameters.state", "op": "frobnicate", "value": "closed"})");
    EXPECT_FALSE(loaded.condition.has_value());
    const ConfigError* error = error_at(loaded.errors, "/op");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->hint.find("\"starts_with\""), std::string::npos) << error->hint;
    EXPECT_NE(error->hint.find("\"exists\""), std::string::npos) << error->hint;
}

TEST(Condition, AnUnknownFieldIsRefused) {
    for (const char* field : {"paramters.amount", "parameters", "parameters.", "parameters..a", "parameters.a.",
                              "parameters..", "Action", "amount", "", "request.host"}) {
        SCOPED_TRACE(field);
        const auto loaded = load(json{{"field", field}, {"op", "equals"}, {"value", "x"}});
        EXPECT_FALSE(loaded.condition.has_value());
        const ConfigError* error = error_at(loaded.errors, "/field");
        ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
        EXPECT_NE(error->message.find("unknown field"), std::string::npos) << error->message;
        EXPECT_NE(error->hint.find("parameters."), std::string::npos) << error->hint;
    }
}

TEST(Condition, AnUnknownKeyInALeafIsReportedWithADidYouMeanHint) {
    const auto loaded = load_text(R"({"field": "action", "op": "equals", "value": "x", "vlaue": "y"})");
    const ConfigError* error = error_at(loaded.errors, "/vlaue");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->hint.find("did you mean \"value\""), std::string::npos) << error->hint;
}

TEST(Condition, AllAndAnyInOneObjectIsReported) {
    const auto loaded = load(json{{"all", json::array({kYes})}, {"any", json::array({kYes})}});
    EXPECT_FALSE(loaded.errors.empty());
}

// condition.h: "records errors and returns nullopt on bad input" - an unknown
// key next to a valid condition included.
TEST(Condition, ALoadThatRecordedAnErrorReturnsNoCondition) {
    const auto unknown_key = load_text(R"({"field": "action", "op": "equals", "value": "x", "vlaue": "y"})");
    EXPECT_FALSE(unknown_key.errors.empty());
    EXPECT_FALSE(unknown_key.condition.has_value());
    const auto both = load(json{{"all", json::array({kYes})}, {"any", json::array({kYes})}});
    EXPECT_FALSE(both.errors.empty());
    EXPECT_FALSE(both.condition.has_value());
    const auto not_with_sibling = load(json{{"not", kYes}, {"reason", "x"}});
    EXPECT_FALSE(not_with_sibling.errors.empty());
    EXPECT_FALSE(not_with_sibling.condition.has_value());
}

TEST(Condition, AMissingValueIsRefused) {
    const auto loaded = load_text(R"({"field": "parameters.sha", "op": "exists"})");
    EXPECT_FALSE(loaded.condition.has_value());
    const ConfigError* error = error_at(loaded.errors, "");
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->message.find("\"value\""), std::string::npos) << error->message;
    EXPECT_FALSE(error->hint.empty()) << error->to_string();
}

TEST(Condition, AMissingFieldOrOperatorIsRefused) {
    const auto no_field = load_text(R"({"op": "equals", "value": "x"})");
    EXPECT_FALSE(no_field.condition.has_value());
    ASSERT_NE(error_at(no_field.errors, ""), nullptr) << all_errors(no_field.errors);
    EXPECT_NE(error_at(no_field.errors, "")->message.find("\"field\""), std::string::npos);

    const auto no_op = load_text(R"({"field": "action", "value": "x"})");
    EXPECT_FALSE(no_op.condition.has_value());
    ASSERT_NE(error_at(no_op.errors, ""), nullptr) << all_errors(no_op.errors);
    EXPECT_NE(error_at(no_op.errors, "")->message.find("\"op\""), std::string::npos);
}

TEST(Condition, AConditionThatIsNotAnObjectIsRefused) {
    for (const char* text : {"[]", "\"action\"", "1", "null"}) {
        SCOPED_TRACE(text);
        const auto loaded = load_text(text);
        EXPECT_FALSE(loaded.condition.has_value());
        EXPECT_NE(error_at(loaded.errors, ""), nullptr) << all_errors(loaded.errors);
    }
}

TEST(Condition, EmptyAllOrAnyIsRefused) {
    for (const char* combinator : {"all", "any"}) {
        SCOPED_TRACE(combinator);
        const auto loaded = load(json{{combinator, json::array()}});
        EXPECT_FALSE(loaded.condition.has_value());
        const ConfigError* error = error_at(loaded.errors, std::string("/") + combinator);
        ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
        EXPECT_NE(error->message.find("empty"), std::string::npos) << error->message;
        EXPECT_FALSE(error->hint.empty());
    }
}

TEST(Condition, AllThatIsNotAnArrayIsRefused) {
    const auto loaded = load(json{{"all", kYes}});
    EXPECT_FALSE(loaded.condition.has_value());
    EXPECT_NE(error_at(loaded.errors, "/all"), nullptr) << all_errors(loaded.errors);
}

TEST(Condition, AnErrorInsideACombinatorPointsAtTheNestedValue) {
    const auto loaded = load_text(R"({"all": [
        {"field": "action", "op": "equals", "value": "x"},
        {"not": {"field": "host", "op": "matches", "value": "("}}]})");
    EXPECT_FALSE(loaded.condition.has_value());
    EXPECT_NE(error_at(loaded.errors, "/all/1/not/value"), nullptr) << all_errors(loaded.errors);
}

json nest_nots(int count) {
    json condition = kYes;
    for (int i = 0; i < count; ++i) condition = json{{"not", condition}};
    return condition;
}

TEST(Condition, NestingUpToMaxDepthLoads) {
    // The root is level 1: kMaxDepth - 1 "not"s put the leaf at level kMaxDepth.
    const auto loaded = load(nest_nots(Condition::kMaxDepth - 1));
    EXPECT_TRUE(loaded.condition.has_value()) << all_errors(loaded.errors);
    EXPECT_TRUE(loaded.errors.empty());
    const Truth expected = (Condition::kMaxDepth - 1) % 2 == 0 ? Truth::yes : Truth::no;
    if (loaded.condition) {
        EXPECT_EQ(eval(*loaded.condition, kleene_action()), expected);
    }
}

TEST(Condition, NestingBeyondMaxDepthIsRefused) {
    const auto loaded = load(nest_nots(Condition::kMaxDepth));
    EXPECT_FALSE(loaded.condition.has_value());
    std::string pointer;
    for (int i = 0; i < Condition::kMaxDepth; ++i) pointer += "/not";
    const ConfigError* error = error_at(loaded.errors, pointer);
    ASSERT_NE(error, nullptr) << all_errors(loaded.errors);
    EXPECT_NE(error->message.find(std::to_string(Condition::kMaxDepth)), std::string::npos) << error->message;
    EXPECT_FALSE(error->hint.empty());
}

TEST(Condition, DepthCountsAllAndAnyToo) {
    json condition = kYes;
    for (int i = 0; i < Condition::kMaxDepth; ++i)
        condition = json{{i % 2 == 0 ? "all" : "any", json::array({condition})}};
    const auto loaded = load(condition);
    EXPECT_FALSE(loaded.condition.has_value());
    EXPECT_FALSE(loaded.errors.empty());
}

json many_leaves(int count) {
    json list = json::array();
    for (int i = 0; i < count; ++i) {
        list.push_back({{"field", "parameters.x"}, {"op", "equals"}, {"value", i}});
    }
    return json{{"any", list}};
}

TEST(Condition, UpToMaxNodesPartsLoad) {
    // The "any" itself is one part.
    const auto loaded = load(many_leaves(Condition::kMaxNodes - 1));
    EXPECT_TRUE(loaded.condition.has_value()) << all_errors(loaded.errors);
    if (loaded.condition) {
        EXPECT_EQ(eval(*loaded.condition, refund(json{{"x", Condition::kMaxNodes - 2}})), Truth::yes);
        EXPECT_EQ(eval(*loaded.condition, refund(json{{"x", -1}})), Truth::no);
    }
}

TEST(Condition, MoreThanMaxNodesPartsAreRefused) {
    const auto loaded = load(many_leaves(Condition::kMaxNodes));
    EXPECT_FALSE(loaded.condition.has_value());
    ASSERT_FALSE(loaded.errors.empty());
    bool found = false;
    for (const auto& error : loaded.errors) {
        if (error.message.find(std::to_string(Condition::kMaxNodes)) != std::string::npos) {
            found = true;
            EXPECT_FALSE(error.hint.empty());
            EXPECT_EQ(error.pointer.rfind("/any/", 0), 0u) << error.pointer;
        }
    }
    EXPECT_TRUE(found) << all_errors(loaded.errors);
}

TEST(Condition, OperatorNamesRoundTrip) {
    EXPECT_EQ(to_string(Condition::Op::equals), "equals");
    EXPECT_EQ(to_string(Condition::Op::not_in), "not_in");
    EXPECT_EQ(to_string(Condition::Op::matches), "matches");
    EXPECT_EQ(to_string(Condition::Op::lte), "lte");
    EXPECT_EQ(to_string(Condition::Op::exists), "exists");
}

}  // namespace
}  // namespace tameflare::policy
