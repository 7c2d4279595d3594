// Parameters: query strings and form bodies (bracket
// nesting, repeated keys), JSON bodies with a depth bound, path decoding and
// dotted field lookup.
#include "policy/params.h"
#include "policy/classify.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace tameflare::policy {
namespace {

using nlohmann::json;
using Segments = std::vector<std::string>;

// ---------------------------------------------------------------------------
// parse_form

json form(std::string_view text, bool expect_ok = true) {
    json out;
    EXPECT_EQ(parse_form(text, out), expect_ok) << text;
    return out;
}

TEST(Params, FormPlainPairs) {
    EXPECT_EQ(form("a=1&b=2"), (json{{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(form(""), json::object());
    EXPECT_EQ(form("amount=5000&currency=usd"), (json{{"amount", "5000"}, {"currency", "usd"}}));
}

TEST(Params, FormValuesAreStrings) {
    const json out = form("n=5&t=true");
    EXPECT_TRUE(out["n"].is_string());
    EXPECT_TRUE(out["t"].is_string());
}

TEST(Params, FormEmptyValueAndKeyWithoutEquals) {
    EXPECT_EQ(form("a="), (json{{"a", ""}}));
    EXPECT_EQ(form("flag"), (json{{"flag", ""}}));
    EXPECT_EQ(form("a=&flag&b=2"), (json{{"a", ""}, {"flag", ""}, {"b", "2"}}));
    EXPECT_EQ(form("a=b=c"), (json{{"a", "b=c"}}));  // only the first '=' splits
}

TEST(Params, FormSkipsEmptyPairs) {
    EXPECT_EQ(form("&&a=1&&b=2&"), (json{{"a", "1"}, {"b", "2"}}));
}

TEST(Params, FormDecodesPlusAndEscapesInKeysAndValues) {
    EXPECT_EQ(form("q=hello+world"), (json{{"q", "hello world"}}));
    EXPECT_EQ(form("q=a%2Bb"), (json{{"q", "a+b"}}));
    EXPECT_EQ(form("first+name=Ada"), (json{{"first name", "Ada"}}));
    EXPECT_EQ(form("k%3Dx=v%26w"), (json{{"k=x", "v&w"}}));
}

TEST(Params, FormBracketKeysNest) {
    EXPECT_EQ(form("metadata[order]=7"), (json{{"metadata", {{"order", "7"}}}}));
    EXPECT_EQ(form("items[0][price]=p"), (json{{"items", {{"0", {{"price", "p"}}}}}}));
    EXPECT_EQ(form("m[a]=1&m[b]=2"), (json{{"m", {{"a", "1"}, {"b", "2"}}}}));
    EXPECT_EQ(form("metadata%5Border%5D=7"), (json{{"metadata", {{"order", "7"}}}}));  // escaped brackets
}

TEST(Params, FormEmptyBracketsMakeAnArray) {
    EXPECT_EQ(form("a[]=x&a[]=y"), (json{{"a", json::array({"x", "y"})}}));
    EXPECT_EQ(form("a[]=only"), (json{{"a", json::array({"only"})}}));
    EXPECT_EQ(form("expand[]=customer&expand[]=invoice&x=1"),
              (json{{"expand", json::array({"customer", "invoice"})}, {"x", "1"}}));
}

TEST(Params, FormRepeatedPlainKeyBecomesAnArrayOfStrings) {
    EXPECT_EQ(form("a=1&a=2"), (json{{"a", json::array({"1", "2"})}}));
    EXPECT_EQ(form("a=1&b=x&a=2&a=3"), (json{{"a", json::array({"1", "2", "3"})}, {"b", "x"}}));
    EXPECT_EQ(form("m[k]=1&m[k]=2"), (json{{"m", {{"k", json::array({"1", "2"})}}}}));
}

TEST(Params, FormShapeClashIsRefusedButKeepsWhatParsed) {
    json out;
    EXPECT_FALSE(parse_form("a=1&a[b]=2", out));
    EXPECT_EQ(out["a"], "1");

    json reversed;
    EXPECT_FALSE(parse_form("a[b]=2&a=1&c=3", reversed));
    EXPECT_EQ(reversed["a"], (json{{"b", "2"}}));
    EXPECT_EQ(reversed["c"], "3");

    json array_then_object;
    EXPECT_FALSE(parse_form("a[]=1&a[b]=2", array_then_object));
    EXPECT_EQ(array_then_object["a"], json::array({"1"}));

    json string_then_array;
    EXPECT_FALSE(parse_form("a=1&a[]=2", string_then_array));
    EXPECT_EQ(string_then_array["a"], "1");
}

TEST(Params, FormEmptyBracketsMustBeLast) {
    json out;
    EXPECT_FALSE(parse_form("a[][b]=1&ok=1", out));
    EXPECT_EQ(out["ok"], "1");
}

TEST(Params, FormUnclosedOrStrayBracketIsRefused) {
    for (const char* text : {"a[b=1", "a[b]c=1", "[a]=1", "a[b][=1", "a[b]]=1"}) {
        SCOPED_TRACE(text);
        json out;
        EXPECT_FALSE(parse_form(std::string(text) + "&ok=yes", out));
        EXPECT_EQ(out["ok"], "yes");  // the rest still parses
    }
}

TEST(Params, FormBadEscapeIsRefusedAndSkipped) {
    json out;
    EXPECT_FALSE(parse_form("a=%zz&b=2&c%4=3", out));
    EXPECT_EQ(out, (json{{"b", "2"}}));
}

TEST(Params, FormEmptyKeyIsRefused) {
    json out;
    EXPECT_FALSE(parse_form("=1&b=2", out));
    EXPECT_EQ(out, (json{{"b", "2"}}));
}

std::string nested_key(int depth) {
    std::string key = "a";
    for (int i = 0; i < depth; ++i) key += "[k" + std::to_string(i) + "]";
    return key;
}

TEST(Params, FormNestingUpToTheBoundParses) {
    json out;
    EXPECT_TRUE(parse_form(nested_key(kMaxFormDepth) + "=v", out));
    const json* node = &out["a"];
    for (int i = 0; i < kMaxFormDepth; ++i) {
        ASSERT_TRUE(node->is_object()) << out.dump();
        node = &(*node)["k" + std::to_string(i)];
    }
    EXPECT_EQ(*node, "v");
}

TEST(Params, FormNestingDeeperThanTheBoundIsRefused) {
    json out;
    EXPECT_FALSE(parse_form(nested_key(kMaxFormDepth + 1) + "=v&b=2", out));
    EXPECT_FALSE(out.contains("a")) << out.dump();
    EXPECT_EQ(out["b"], "2");
    json deep;
    EXPECT_FALSE(parse_form(nested_key(1000) + "=v", deep));
}

TEST(Params, FormAddsToAnExistingObject) {
    json out{{"pre", "1"}};
    EXPECT_TRUE(parse_form("a=2", out));
    EXPECT_EQ(out, (json{{"pre", "1"}, {"a", "2"}}));
}

// ---------------------------------------------------------------------------
// parse_json_body

TEST(Params, JsonBodyParsesAValidDocument) {
    const auto value = parse_json_body(R"({"amount": 5000, "currency": "usd", "meta": {"a": [1, 2]}})");
    ASSERT_TRUE(value.has_value());
    EXPECT_EQ((*value)["amount"], 5000);
    EXPECT_TRUE((*value)["amount"].is_number());  // JSON bodies keep their types
    EXPECT_EQ((*value)["meta"]["a"][1], 2);
    EXPECT_EQ(parse_json_body("[1, 2, 3]"), json::array({1, 2, 3}));
    EXPECT_EQ(parse_json_body("\"s\""), json("s"));
}

TEST(Params, JsonBodyRefusesInvalidJson) {
    for (const char* text : {"", "{", "{\"a\": }", "{} x", "{'a': 1}", "[1, 2,]", "amount=5", "nul"}) {
        SCOPED_TRACE(text);
        EXPECT_EQ(parse_json_body(text), std::nullopt);
    }
}

std::string nested_arrays(int depth, const std::string& inner = "1") {
    return std::string(static_cast<std::size_t>(depth), '[') + inner +
           std::string(static_cast<std::size_t>(depth), ']');
}

std::string nested_objects(int depth, const std::string& inner = "1") {
    std::string text;
    for (int i = 0; i < depth; ++i) text += "{\"a\":";
    text += inner;
    text += std::string(static_cast<std::size_t>(depth), '}');
    return text;
}

TEST(Params, JsonBodyNestedUpToMaxDepthParses) {
    EXPECT_TRUE(parse_json_body(nested_arrays(32)).has_value());
    EXPECT_TRUE(parse_json_body(nested_objects(32)).has_value());
    EXPECT_TRUE(parse_json_body(nested_arrays(2), 2).has_value());
    EXPECT_TRUE(parse_json_body(nested_objects(2), 2).has_value());
}

TEST(Params, JsonBodyNestedDeeperThanMaxDepthIsRefused) {
    EXPECT_EQ(parse_json_body(nested_arrays(33)), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_objects(33)), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_arrays(3), 2), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_objects(3), 2), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_arrays(100000)), std::nullopt);
    // Deep inside a wide document.
    EXPECT_EQ(parse_json_body(R"({"ok": 1, "deep": )" + nested_objects(40) + "}"), std::nullopt);
}

// An empty container counts as a level of its own.
TEST(Params, JsonBodyEmptyInnermostContainerCountsTowardsTheDepth) {
    EXPECT_EQ(parse_json_body(nested_arrays(3, ""), 2), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_objects(2, "{}"), 2), std::nullopt);
    EXPECT_EQ(parse_json_body(nested_arrays(33, "")), std::nullopt);
    EXPECT_TRUE(parse_json_body(nested_arrays(2, ""), 2).has_value());
    EXPECT_TRUE(parse_json_body(nested_objects(1, "{}"), 2).has_value());
}

// ---------------------------------------------------------------------------
// decode_path

TEST(Params, DecodePathSplitsIntoDecodedSegments) {
    EXPECT_EQ(decode_path("/repos/o/r/pulls/7"), (Segments{"repos", "o", "r", "pulls", "7"}));
    EXPECT_EQ(decode_path("/a%20b/c%41"), (Segments{"a b", "cA"}));
    EXPECT_EQ(decode_path("/a+b"), (Segments{"a+b"}));  // '+' is not a space in a path
    EXPECT_EQ(decode_path("/"), Segments{});
    EXPECT_EQ(decode_path("/.../x"), (Segments{"...", "x"}));  // not a dot segment
    EXPECT_EQ(decode_path("/.git/x.y"), (Segments{".git", "x.y"}));
}

TEST(Params, DecodePathCollapsesEmptySegments) {
    EXPECT_EQ(decode_path("//a///b"), (Segments{"a", "b"}));
    EXPECT_EQ(decode_path("/a/b/"), (Segments{"a", "b"}));
    EXPECT_EQ(decode_path("/a/b//"), (Segments{"a", "b"}));
    EXPECT_EQ(decode_path("//"), Segments{});
}

TEST(Params, DecodePathRefusesDotSegments) {
    for (const char* path :
         {"/a/./b", "/a/../b", "/..", "/.", "/a/%2e%2e/b", "/a/%2E%2E", "/a/%2e/b", "/a/.%2e/b", "/a/%2e./b"}) {
        SCOPED_TRACE(path);
        EXPECT_EQ(decode_path(path), std::nullopt);
    }
}

TEST(Params, DecodePathRefusesEncodedSeparatorsAndNul) {
    for (const char* path : {"/a%2Fb", "/a%2fb", "/a/%2F", "/a%5Cb", "/a%5cb", "/a\\b", "/a%00", "/%00/x"}) {
        SCOPED_TRACE(path);
        EXPECT_EQ(decode_path(path), std::nullopt);
    }
}

TEST(Params, DecodePathRefusesABadEscape) {
    for (const char* path : {"/a%zz", "/a%4", "/a/%", "/%g0/b"}) {
        SCOPED_TRACE(path);
        EXPECT_EQ(decode_path(path), std::nullopt);
    }
}

TEST(Params, DecodePathRefusesARelativeOrEmptyPath) {
    EXPECT_EQ(decode_path(""), std::nullopt);
    EXPECT_EQ(decode_path("a/b"), std::nullopt);
    EXPECT_EQ(decode_path("*"), std::nullopt);
}

TEST(Params, DecodePathAllowsUpTo64Segments) {
    std::string path;
    for (int i = 0; i < 64; ++i) path += "/s";
    const auto segments = decode_path(path);
    ASSERT_TRUE(segments.has_value());
    EXPECT_EQ(segments->size(), 64u);
    EXPECT_EQ(decode_path(path + "/"), segments);  // a trailing slash adds none
    EXPECT_EQ(decode_path(path + "//"), segments);
}

TEST(Params, DecodePathRefusesMoreThan64Segments) {
    std::string path;
    for (int i = 0; i < 65; ++i) path += "/s";
    EXPECT_EQ(decode_path(path), std::nullopt);
    std::string huge;
    for (int i = 0; i < 10000; ++i) huge += "/s";
    EXPECT_EQ(decode_path(huge), std::nullopt);
}

// ---------------------------------------------------------------------------
// find_field

TEST(Params, FindFieldFollowsDottedPaths) {
    const json root{{"metadata", {{"order", "7"}}},
                    {"items", json::array({{{"price", 100}}, {{"price", 250}}})},
                    {"state", "closed"}};
    ASSERT_NE(find_field(root, "state"), nullptr);
    EXPECT_EQ(*find_field(root, "state"), "closed");
    ASSERT_NE(find_field(root, "metadata.order"), nullptr);
    EXPECT_EQ(*find_field(root, "metadata.order"), "7");
    ASSERT_NE(find_field(root, "items.0.price"), nullptr);
    EXPECT_EQ(*find_field(root, "items.0.price"), 100);
    ASSERT_NE(find_field(root, "items.1.price"), nullptr);
    EXPECT_EQ(*find_field(root, "items.1.price"), 250);
    ASSERT_NE(find_field(root, "metadata"), nullptr);
    EXPECT_TRUE(find_field(root, "metadata")->is_object());
}

TEST(Params, FindFieldReturnsNullForWhatIsNotThere) {
    const json root{{"metadata", {{"order", "7"}}}, {"items", json::array({{{"price", 100}}})}, {"s", "x"}};
    EXPECT_EQ(find_field(root, "missing"), nullptr);
    EXPECT_EQ(find_field(root, "metadata.missing"), nullptr);
    EXPECT_EQ(find_field(root, "items.1.price"), nullptr);  // out of range
    EXPECT_EQ(find_field(root, "items.x"), nullptr);        // not an index
    EXPECT_EQ(find_field(root, "items.-1"), nullptr);
    EXPECT_EQ(find_field(root, "items.99999999999999999999"), nullptr);
    EXPECT_EQ(find_field(root, "s.length"), nullptr);  // into a string
    EXPECT_EQ(find_field(root, "metadata.order.x"), nullptr);
    EXPECT_EQ(find_field(root, ""), nullptr);
    EXPECT_EQ(find_field(json("scalar"), "a"), nullptr);
}

TEST(Params, FindFieldReadsFormStyleNumericKeys) {
    const json root{{"items", {{"0", {{"price", "p"}}}}}};
    ASSERT_NE(find_field(root, "items.0.price"), nullptr);
    EXPECT_EQ(*find_field(root, "items.0.price"), "p");
}

}  // namespace
}  // namespace tameflare::policy
