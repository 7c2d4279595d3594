// Every class of configuration error is refused with the file it is in, the
// JSON pointer to the offending value and a hint how to fix it. Gateways are
// loaded against the connectors shipped in connectors/.
#include "policy/config.h"
#include "policy/config_error.h"
#include "policy/document.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::policy {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::vector<Document> documents_in(const fs::path& dir) {
    std::vector<fs::path> paths;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.path().extension() == ".json") paths.push_back(entry.path());
    }
    std::sort(paths.begin(), paths.end());
    std::vector<Document> docs;
    for (const auto& path : paths) docs.push_back(Document{path.string(), read_file(path)});
    return docs;
}

const std::vector<Document>& shipped_connectors() {
    static const std::vector<Document> docs = documents_in(fs::path(TF_SOURCE_DIR) / "connectors");
    return docs;
}

LoadResult load_gateway(std::string text, std::string origin = "gateways.d/bot.json") {
    return load_config(shipped_connectors(), {Document{std::move(origin), std::move(text)}});
}

LoadResult load_connector(std::string text, std::string origin = "connectors.d/acme.json") {
    return load_config({Document{std::move(origin), std::move(text)}}, {});
}

const ConfigError* find_error(const ConfigErrors& errors, std::string_view file, std::string_view pointer) {
    for (const auto& error : errors) {
        if (error.file == file && error.pointer == pointer) return &error;
    }
    return nullptr;
}

// Checks that loading failed with an error in `file` at `pointer` whose message
// contains `message` and whose hint is not empty and contains `hint`.
void expect_refused(const LoadResult& result, std::string_view file, std::string_view pointer, std::string_view message,
                    const char* hint = "") {
    EXPECT_FALSE(result.ok());
    EXPECT_EQ(result.config, nullptr);
    const ConfigError* error = find_error(result.errors, file, pointer);
    ASSERT_NE(error, nullptr) << "no error at " << file << " " << pointer << "; got:\n" << format_errors(result.errors);
    EXPECT_NE(error->message.find(message), std::string::npos)
        << "message \"" << error->message << "\" lacks \"" << message << "\"";
    EXPECT_FALSE(error->hint.empty()) << "no hint for: " << error->to_string();
    EXPECT_NE(error->hint.find(hint), std::string::npos) << "hint \"" << error->hint << "\" lacks \"" << hint << "\"";
}

void expect_refused_gateway(const std::string& text, std::string_view pointer, std::string_view message,
                            const char* hint = "") {
    SCOPED_TRACE(text);
    expect_refused(load_gateway(text), "gateways.d/bot.json", pointer, message, hint);
}

// A gateway around one connector entry.
std::string with_github(const std::string& entry, const std::string& extra = "") {
    return R"({"name": "bot", "connectors": {"github": )" + entry + "}" + extra + "}";
}

// A connector file around one list of routes.
std::string acme(const std::string& routes, const std::string& extra = "") {
    return R"({"name": "acme", "domains": ["api.acme.test"],)" + extra + R"( "routes": )" + routes + "}";
}

void expect_refused_connector(const std::string& text, std::string_view pointer, std::string_view message,
                              const char* hint = "") {
    SCOPED_TRACE(text);
    expect_refused(load_connector(text), "connectors.d/acme.json", pointer, message, hint);
}

// ---------------------------------------------------------------------------
// The baseline: what ships loads, so every refusal below is the test's doing.

TEST(ConfigErrors, TheShippedConnectorsAndExampleGatewaysLoad) {
    ASSERT_GE(shipped_connectors().size(), 8u);
    const auto result =
        load_config(shipped_connectors(), documents_in(fs::path(TF_SOURCE_DIR) / "examples/gateways.d"));
    EXPECT_TRUE(result.ok()) << format_errors(result.errors);
    EXPECT_TRUE(result.errors.empty());
    ASSERT_NE(result.config, nullptr);
    EXPECT_NE(result.config->gateway("dev-bot"), nullptr);
    EXPECT_NE(result.config->gateway("payments-bot"), nullptr);
    EXPECT_NE(result.config->gateway("ci"), nullptr);
    EXPECT_EQ(result.config->connectors.count("github"), 1u);
}

TEST(ConfigErrors, TheGatewayTemplatesUsedBelowLoadWhenCorrect) {
    for (const std::string& text : std::vector<std::string>{
             with_github(R"({"preset": "read_only"})"),
             with_github(R"({"rules": [{"action": "github.*", "decision": "deny"}]})"),
             with_github(R"({"base_url": "https://ghe.example.com/api/v3"})"),
             with_github(R"({"credential": "pat", "credential_format": "Bearer {secret}"})"),
             R"({"name": "bot", "connectors": {"web": {"connector": "http", "domains": ["x.example.com"],
                 "rules": [{"action": "http.get", "decision": "allow"}]}}})",
             with_github("{}", R"(, "policies": [{"name": "p", "actions": ["github.pr.*"],
                 "when": {"field": "parameters.repo", "op": "matches", "value": "^infra"}, "decision": "deny"}])"),
         }) {
        SCOPED_TRACE(text);
        const auto result = load_gateway(text);
        EXPECT_TRUE(result.ok()) << format_errors(result.errors);
    }
    const auto connector = load_connector(acme(R"([{"method": "GET", "path": "/items/{id}", "action": "acme.item.get",
        "variants": [{"when": {"field": "expand", "present": true}, "action": "acme.item.get_expanded"}]}])"));
    EXPECT_TRUE(connector.ok()) << format_errors(connector.errors);
}

// ---------------------------------------------------------------------------
// JSON syntax

TEST(ConfigErrors, ASyntaxErrorGivesTheLineAndColumnOfTheBadToken) {
    const std::string text =
        "{\n"
        "  \"name\": \"bot\",\n"
        "  \"connectors\": { \"github\": {}, },\n"
        "  \"enforcement\": \"full\"\n"
        "}\n";
    const auto result = load_gateway(text);
    EXPECT_FALSE(result.ok());
    ASSERT_EQ(result.errors.size(), 1u) << format_errors(result.errors);
    const ConfigError& error = result.errors.front();
    EXPECT_EQ(error.file, "gateways.d/bot.json");
    EXPECT_EQ(error.pointer, "");
    EXPECT_EQ(error.line, 3);
    EXPECT_EQ(error.column, 33);  // the '}' after the trailing comma
    EXPECT_NE(error.message.find("invalid JSON"), std::string::npos) << error.message;
    EXPECT_FALSE(error.hint.empty());
}

// Columns count characters, not UTF-8 bytes: for the line
//   "description": "café €", ]
// python's json.tool and editors say column 28 (bytes would give 31).
TEST(ConfigErrors, ASyntaxErrorColumnCountsCharactersNotBytes) {
    const std::string text = "{\n  \"description\": \"caf\xC3\xA9 \xE2\x82\xAC\", ]\n}\n";
    const auto result = load_gateway(text);
    ASSERT_EQ(result.errors.size(), 1u) << format_errors(result.errors);
    EXPECT_EQ(result.errors.front().line, 2);
    EXPECT_EQ(result.errors.front().column, 28);  // the ']'
}

TEST(ConfigErrors, ASyntaxErrorOnTheFirstLineIsLineOne) {
    const auto result = load_gateway("{\"name\" \"bot\"}");
    ASSERT_EQ(result.errors.size(), 1u) << format_errors(result.errors);
    EXPECT_EQ(result.errors.front().line, 1);
    EXPECT_GE(result.errors.front().column, 9);
}

TEST(ConfigErrors, AnEmptyOrTruncatedFileIsASyntaxError) {
    for (const std::string text : {"", "{\"name\": \"bot\",\n \"connectors\": {"}) {
        SCOPED_TRACE(text);
        const auto result = load_gateway(text);
        EXPECT_FALSE(result.ok());
        ASSERT_FALSE(result.errors.empty());
        EXPECT_EQ(result.errors.front().file, "gateways.d/bot.json");
        EXPECT_GE(result.errors.front().line, 1);
        EXPECT_NE(result.errors.front().message.find("invalid JSON"), std::string::npos);
    }
}

TEST(ConfigErrors, ASyntaxErrorInAConnectorFileNamesThatFile) {
    const auto result = load_connector("{\"name\": \"acme\",\n\"routes\": [}\n");
    EXPECT_FALSE(result.ok());
    ASSERT_EQ(result.errors.size(), 1u) << format_errors(result.errors);
    EXPECT_EQ(result.errors.front().file, "connectors.d/acme.json");
    EXPECT_EQ(result.errors.front().line, 2);
    EXPECT_EQ(result.errors.front().column, 12);
}

// ---------------------------------------------------------------------------
// Unknown fields, with the close name suggested

TEST(ConfigErrors, AnUnknownGatewayFieldSuggestsTheCloseName) {
    expect_refused_gateway(R"({"name": "bot", "enforcment": "full", "connectors": {}})", "/enforcment",
                           "unknown field \"enforcment\"", "\"enforcement\"");
}

TEST(ConfigErrors, AnUnknownGatewayFieldFarFromAnyListsTheKnownOnes) {
    expect_refused_gateway(R"({"name": "bot", "zzzzzzzzzzzzzz": 1, "connectors": {}})", "/zzzzzzzzzzzzzz",
                           "unknown field", "\"approval_timeout_seconds\"");
}

TEST(ConfigErrors, TcpRulesAndTheProxyTokenAreChecked) {
    const std::string base = R"({"name": "bot", "connectors": {})";
    const auto ok = load_gateway(base + R"(, "proxy_token_sha256": ")" + std::string(64, 'a') +
                                 R"(", "tcp": [{"host": "db.example.com", "port": 5432}, {"cidr": "192.0.2.0/24",
                                 "port": 22}, {"cidr": "2001:db8::1", "port": 443}]})");
    ASSERT_TRUE(ok.ok()) << format_errors(ok.errors);
    const auto& tcp = ok.config->gateway("bot")->tcp;
    ASSERT_EQ(tcp.size(), 3U);
    EXPECT_EQ(tcp[0].host, "db.example.com");
    EXPECT_EQ(tcp[1].cidr, "192.0.2.0/24");
    EXPECT_EQ(tcp[2].index, 2U);

    expect_refused_gateway(base + R"(, "proxy_token_sha256": "ABC"})", "/proxy_token_sha256",
                           "not 64 lower-case hex digits", "sha256sum");
    expect_refused_gateway(base + R"(, "tcp": [{"port": 22}]})", "/tcp/0", "exactly one of", "cidr");
    expect_refused_gateway(base + R"(, "tcp": [{"host": "a.test", "cidr": "10.0.0.0/8", "port": 22}]})", "/tcp/0",
                           "exactly one of", "cidr");
    expect_refused_gateway(base + R"(, "tcp": [{"cidr": "10.0.0.0/33", "port": 22}]})", "/tcp/0/cidr",
                           "invalid address range", "192.0.2.0/24");
    expect_refused_gateway(base + R"(, "tcp": [{"host": "DB.example", "port": 22}]})", "/tcp/0/host",
                           "invalid host name", "lower-case");
    expect_refused_gateway(base + R"(, "tcp": [{"host": "db.test", "port": 0}]})", "/tcp/0/port", "", "");
    expect_refused_gateway(base + R"(, "tcp": [{"host": "db.test", "port": 22, "proto": "udp"}]})", "/tcp/0/proto",
                           "unknown field", "");
}

TEST(ConfigErrors, AnUnknownConnectorInstanceFieldSuggestsTheCloseName) {
    expect_refused_gateway(with_github(R"({"presett": "read_only"})"), "/connectors/github/presett",
                           "unknown field \"presett\"", "\"preset\"");
}

TEST(ConfigErrors, AnUnknownRuleFieldSuggestsTheCloseName) {
    expect_refused_gateway(with_github(R"({"rules": [{"action": "github.pr.merge", "decison": "allow"}]})"),
                           "/connectors/github/rules/0/decison", "unknown field \"decison\"", "\"decision\"");
}

TEST(ConfigErrors, AnUnknownPolicyFieldSuggestsTheCloseName) {
    expect_refused_gateway(with_github("{}", R"(, "policies": [{"name": "p", "reasn": "x", "decision": "deny",
        "when": {"field": "action", "op": "equals", "value": "github.pr.merge"}}])"),
                           "/policies/0/reasn", "unknown field \"reasn\"", "\"reason\"");
}

TEST(ConfigErrors, AnUnknownRateLimitFieldSuggestsTheCloseName) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"request": 5}})", "/rate_limit/request",
                           "unknown field", "\"requests\"");
}

TEST(ConfigErrors, AnUnknownConnectorFileFieldSuggestsTheCloseName) {
    expect_refused_connector(acme("[]", R"( "domain": ["x.acme.test"],)"), "/domain", "unknown field \"domain\"",
                             "\"domains\"");
}

// A route may spell the credential its own way (github's git endpoints take HTTP Basic); a spelling without the
// secret is refused where it is written.
TEST(ConfigErrors, ARouteCredentialFormatMustHoldTheSecret) {
    expect_refused_connector(
        acme(R"([{"method": "GET", "path": "/a", "action": "acme.a", "credential_format": "Basic {basic:}"}])"),
        "/routes/0/credential_format", "{basic:USER} needs a user name");
    expect_refused_connector(
        acme(R"([{"method": "GET", "path": "/a", "action": "acme.a", "credential_format": "Bearer secret"}])"),
        "/routes/0/credential_format", "has no {secret}");
    const auto loaded = load_connector(
        acme(R"([{"method": "GET", "path": "/a", "action": "acme.a", "credential_format": "Basic {basic:api}"}])"));
    EXPECT_TRUE(loaded.ok()) << format_errors(loaded.errors);
}

TEST(ConfigErrors, AnUnknownRouteFieldSuggestsTheCloseName) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a", "action": "acme.a", "rsik": "high"}])"),
                             "/routes/0/rsik", "unknown field", "\"risk\"");
}

TEST(ConfigErrors, AFieldNameWithASlashIsEscapedInThePointer) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "a/b~c": 1})", "/a~1b~0c", "unknown field");
}

// ---------------------------------------------------------------------------
// Wrong types and out-of-range values

TEST(ConfigErrors, AStringWhereAnObjectIsExpectedIsRefused) {
    expect_refused_gateway(R"({"name": "bot", "connectors": "github"})", "/connectors", "expected an object");
    expect_refused_gateway(with_github(R"("read_only")"), "/connectors/github", "expected an object");
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": 120})", "/rate_limit",
                           "expected an object");
}

TEST(ConfigErrors, AnObjectWhereAStringOrArrayIsExpectedIsRefused) {
    expect_refused_gateway(R"({"name": {"first": "bot"}, "connectors": {}})", "/name", "expected a string");
    expect_refused_gateway(with_github(R"({"rules": {"action": "github.pr.merge", "decision": "allow"}})"),
                           "/connectors/github/rules", "expected an array");
    expect_refused_gateway(with_github(R"({"domains": "api.github.com"})"), "/connectors/github/domains",
                           "expected an array");
}

TEST(ConfigErrors, AGatewayThatIsNotAnObjectIsRefused) {
    expect_refused(load_gateway("[]"), "gateways.d/bot.json", "", "expected an object");
}

TEST(ConfigErrors, ApprovalTimeoutOutOfRangeIsRefusedWithTheRange) {
    for (const char* value : {"0", "-5", "604801", "18446744073709551615"}) {
        SCOPED_TRACE(value);
        expect_refused_gateway(
            std::string(R"({"name": "bot", "connectors": {}, "approval_timeout_seconds": )") + value + "}",
            "/approval_timeout_seconds", "", "604800");
    }
    EXPECT_TRUE(load_gateway(R"({"name": "bot", "connectors": {}, "approval_timeout_seconds": 604800})").ok());
    EXPECT_TRUE(load_gateway(R"({"name": "bot", "connectors": {}, "approval_timeout_seconds": 1})").ok());
}

TEST(ConfigErrors, ApprovalTimeoutThatIsNoIntegerIsRefused) {
    // 1e20 does not fit 64 bits: the parser reads it as a floating-point number.
    for (const char* value : {"1.5", "\"300\"", "true", "99999999999999999999"}) {
        SCOPED_TRACE(value);
        expect_refused_gateway(
            std::string(R"({"name": "bot", "connectors": {}, "approval_timeout_seconds": )") + value + "}",
            "/approval_timeout_seconds", "expected an integer");
    }
}

TEST(ConfigErrors, RateLimitOutOfRangeIsRefusedWithTheRange) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"requests": 100001}})",
                           "/rate_limit/requests", "out of range", "100000");
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"requests": -1}})",
                           "/rate_limit/requests", "out of range", "100000");
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"window_seconds": 0}})",
                           "/rate_limit/window_seconds", "out of range", "3600");
    expect_refused_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"window_seconds": 3601}})",
                           "/rate_limit/window_seconds", "out of range", "3600");
    const auto ok =
        load_gateway(R"({"name": "bot", "connectors": {}, "rate_limit": {"requests": 0, "window_seconds": 3600}})");
    ASSERT_TRUE(ok.ok()) << format_errors(ok.errors);
    EXPECT_EQ(ok.config->gateway("bot")->rate_limit.requests, 0u);
    EXPECT_EQ(ok.config->gateway("bot")->rate_limit.window, std::chrono::seconds(3600));
}

TEST(ConfigErrors, AnUnknownEnumValueSuggestsTheCloseOne) {
    expect_refused_gateway(R"({"name": "bot", "enforcement": "ful", "connectors": {}})", "/enforcement",
                           "unknown value \"ful\"", "did you mean \"full\"");
    expect_refused_gateway(with_github(R"({"preset": "readonly"})"), "/connectors/github/preset", "unknown value",
                           "did you mean \"read_only\"");
    expect_refused_gateway(with_github(R"({"rules": [{"action": "github.pr.merge", "decision": "allwo"}]})"),
                           "/connectors/github/rules/0/decision", "unknown value", "did you mean \"allow\"");
}

// ---------------------------------------------------------------------------
// Connectors in a gateway

TEST(ConfigErrors, AnUnknownConnectorSuggestsTheCloseName) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {"githb": {}}})", "/connectors/githb",
                           "unknown connector \"githb\"", "did you mean \"github\"");
    expect_refused_gateway(R"({"name": "bot", "connectors": {"pay": {"connector": "stirpe"}}})",
                           "/connectors/pay/connector", "unknown connector \"stirpe\"", "did you mean \"stripe\"");
}

TEST(ConfigErrors, AnUnknownConnectorFarFromAnyListsTheLoadedOnes) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {"salesforce": {}}})", "/connectors/salesforce",
                           "unknown connector", "github");
}

TEST(ConfigErrors, AnInvalidConnectorInstanceNameIsRefused) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {"GitHub": {"connector": "github"}}})",
                           "/connectors/GitHub", "invalid connector instance name");
}

TEST(ConfigErrors, AnInvalidGatewayNameIsRefused) {
    for (const char* name : {"Dev Bot", "dev.bot", "-bot", "", "bot/1", "DEV"}) {
        SCOPED_TRACE(name);
        expect_refused_gateway(std::string(R"({"name": ")") + name + R"(", "connectors": {}})", "/name",
                               "invalid gateway name", "lower-case");
    }
    expect_refused_gateway(R"({"name": ")" + std::string(64, 'a') + R"(", "connectors": {}})", "/name",
                           "invalid gateway name", "63");
    EXPECT_TRUE(load_gateway(R"({"name": ")" + std::string(63, 'a') + R"(", "connectors": {}})").ok());
}

TEST(ConfigErrors, AMissingGatewayNameOrConnectorsIsRefused) {
    expect_refused_gateway(R"({"connectors": {}})", "", "missing required field \"name\"");
    expect_refused_gateway(R"({"name": "bot"})", "", "missing required field \"connectors\"", "github");
}

TEST(ConfigErrors, AConnectorWithoutDomainsNeedsDomainsInTheGateway) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {"http": {}}})", "/connectors/http", "has no domains",
                           "domains");
    expect_refused_gateway(R"({"name": "bot", "connectors": {"tools": {"connector": "mcp"}}})", "/connectors/tools",
                           "has no domains", "domains");
}

TEST(ConfigErrors, AnInvalidDomainIsRefused) {
    expect_refused_gateway(with_github(R"({"domains": ["api.github.com", "Bad Host"]})"),
                           "/connectors/github/domains/1", "invalid domain", "host name");
}

TEST(ConfigErrors, ADomainServedByTwoConnectorInstancesIsRefused) {
    expect_refused_gateway(R"({"name": "bot", "connectors": {"primary": {"connector": "github"},
                                                          "second": {"connector": "github"}}})",
                           "/connectors/second", "served by connector \"primary\"", "one connector");
    expect_refused_gateway(R"({"name": "bot", "connectors": {
        "one": {"connector": "http", "domains": ["x.example.com"]},
        "two": {"connector": "http", "domains": ["y.example.com", "x.example.com"]}}})",
                           "/connectors/two", "\"x.example.com\"", "one connector");
}

TEST(ConfigErrors, AnInvalidBaseUrlIsRefused) {
    for (const char* url : {"ftp://ghe.example.com", "ghe.example.com/api/v3", "https://", "https:///api",
                            "https://ghe.example.com/api?x=1", "https://ghe.example.com/#frag"}) {
        SCOPED_TRACE(url);
        expect_refused_gateway(with_github(std::string(R"({"base_url": ")") + url + "\"}"),
                               "/connectors/github/base_url", "invalid base_url", "https://");
    }
}

TEST(ConfigErrors, ACredentialFormatWithoutSecretIsRefused) {
    expect_refused_gateway(with_github(R"({"credential": "pat", "credential_format": "Bearer"})"),
                           "/connectors/github/credential_format", "{secret}", "{secret}");
}

// ---------------------------------------------------------------------------
// Permission rules

TEST(ConfigErrors, AnEmptyActionPatternIsRefused) {
    expect_refused_gateway(with_github(R"({"rules": [{"action": "", "decision": "allow"}]})"),
                           "/connectors/github/rules/0/action", "empty action pattern", "github.");
}

TEST(ConfigErrors, APatternForAnotherConnectorIsRefused) {
    expect_refused_gateway(with_github(R"({"rules": [{"action": "github.pr.merge", "decision": "allow"},
                                                      {"action": "stripe.x", "decision": "allow"}]})"),
                           "/connectors/github/rules/1/action", "does not start with \"github.\"", "github.stripe.x");
    expect_refused_gateway(with_github(R"({"rules": [{"action": "pr.merge", "decision": "allow"}]})"),
                           "/connectors/github/rules/0/action", "does not start with \"github.\"", "github.pr.merge");
}

TEST(ConfigErrors, APatternThatMatchesNoStaticActionSuggestsTheCloseOne) {
    expect_refused_gateway(with_github(R"({"rules": [{"action": "github.pr.merg", "decision": "allow"}]})"),
                           "/connectors/github/rules/0/action", "matches no action",
                           "did you mean \"github.pr.merge\"");
    expect_refused_gateway(with_github(R"({"rules": [{"action": "github.wiki.*", "decision": "allow"}]})"),
                           "/connectors/github/rules/0/action", "matches no action", "github");
}

TEST(ConfigErrors, AnyPatternIsAcceptedForAConnectorWithDynamicActions) {
    const auto result = load_gateway(R"({"name": "bot", "connectors": {"web": {"connector": "http",
        "domains": ["x.example.com"], "rules": [{"action": "http.connect", "decision": "allow"}]}}})");
    EXPECT_TRUE(result.ok()) << format_errors(result.errors);
}

TEST(ConfigErrors, AConnectorWideRuleWithANonCustomPresetIsRefused) {
    for (const char* preset : {"read_only", "allow_all", "require_approval"}) {
        for (const char* pattern : {"github.*", "*"}) {
            SCOPED_TRACE(std::string(preset) + " " + pattern);
            expect_refused_gateway(with_github(std::string(R"({"preset": ")") + preset + R"(", "rules": [
                    {"action": ")" + pattern + R"(", "decision": "deny"}]})"),
                                   "/connectors/github/rules/0/action", preset, "preset");
        }
    }
    EXPECT_TRUE(
        load_gateway(with_github(R"({"preset": "custom", "rules": [{"action": "*", "decision": "deny"}]})")).ok());
    EXPECT_TRUE(load_gateway(
                    with_github(R"({"preset": "read_only", "rules": [{"action": "github.pr.*", "decision": "deny"}]})"))
                    .ok());
}

// ---------------------------------------------------------------------------
// Condition policies

std::string policy(const std::string& fields) {
    return with_github("{}", R"(, "policies": [)" + fields + "]");
}

constexpr const char* kWhen = R"("when": {"field": "parameters.repo", "op": "equals", "value": "infra"})";

TEST(ConfigErrors, ABadRegexInAPolicyIsRefused) {
    expect_refused_gateway(policy(R"({"name": "p", "decision": "deny",
        "when": {"any": [{"field": "action", "op": "equals", "value": "github.pr.merge"},
                         {"field": "parameters.repo", "op": "matches", "value": "infra(["}]}})"),
                           "/policies/0/when/any/1/value", "regular expression", "RE2");
}

TEST(ConfigErrors, APolicyThatAllowsIsRefused) {
    expect_refused_gateway(policy(std::string(R"({"name": "p", "decision": "allow", )") + kWhen + "}"),
                           "/policies/0/decision", "cannot allow", "permission rule");
}

TEST(ConfigErrors, APolicyWithAnUnknownDecisionIsRefused) {
    expect_refused_gateway(policy(std::string(R"({"name": "p", "decision": "deny_all", )") + kWhen + "}"),
                           "/policies/0/decision", "unknown value", "\"deny\"");
}

TEST(ConfigErrors, APolicyWithoutWhenIsRefused) {
    expect_refused_gateway(policy(R"({"name": "p", "decision": "deny"})"), "/policies/0",
                           "missing required field \"when\"", "parameters.amount");
}

TEST(ConfigErrors, APolicyForAConnectorNotInTheGatewayIsRefused) {
    expect_refused_gateway(policy(std::string(R"({"name": "p", "decision": "deny",
        "actions": ["github.pr.merge", "stripe.refund.create"], )") +
                                  kWhen + "}"),
                           "/policies/0/actions/1", "matches no connector", "connectors");
    expect_refused_gateway(
        policy(std::string(R"({"name": "p", "decision": "deny", "actions": ["merge"], )") + kWhen + "}"),
        "/policies/0/actions/0", "matches no connector", "connectors");
}

TEST(ConfigErrors, APolicyActionGlobOverEveryConnectorIsAccepted) {
    for (const char* pattern : {"*", "*.delete", "github.*"}) {
        SCOPED_TRACE(pattern);
        const auto result = load_gateway(policy(std::string(R"({"name": "p", "decision": "deny", "actions": [")") +
                                                pattern + "\"], " + kWhen + "}"));
        EXPECT_TRUE(result.ok()) << format_errors(result.errors);
    }
}

TEST(ConfigErrors, DuplicatePolicyNamesAreRefused) {
    expect_refused_gateway(policy(std::string(R"({"name": "same", "decision": "deny", )") + kWhen +
                                  R"(}, {"name": "other", "decision": "deny", )" + kWhen +
                                  R"(}, {"name": "same", "decision": "require_approval", )" + kWhen + "}"),
                           "/policies/2/name", "duplicate policy name \"same\"", "unique");
}

// ---------------------------------------------------------------------------
// Several documents

TEST(ConfigErrors, ADuplicateGatewayNamesTheOtherFile) {
    const std::string text = R"({"name": "bot", "connectors": {"github": {"preset": "read_only"}}})";
    const auto result =
        load_config(shipped_connectors(), {Document{"gateways.d/a.json", text}, Document{"gateways.d/b.json", text}});
    expect_refused(result, "gateways.d/b.json", "/name", "gateways.d/a.json", "unique");
}

TEST(ConfigErrors, ADuplicateConnectorNameAcrossTwoFilesIsRefused) {
    auto docs = shipped_connectors();
    docs.push_back(
        Document{"connectors.d/my-github.json", R"({"name": "github", "domains": ["git.example.com"], "routes": []})"});
    const auto result = load_config(docs, {});
    const std::string first = (fs::path(TF_SOURCE_DIR) / "connectors" / "github.json").string();
    expect_refused(result, "connectors.d/my-github.json", "/name", first, "connectors.d");
}

TEST(ConfigErrors, EveryErrorInEveryDocumentIsReportedInOneLoad) {
    const auto result = load_config(
        shipped_connectors(),
        {Document{"gateways.d/one.json", R"({"name": "one", "enforcment": "full", "connectors": {"githb": {}}})"},
         Document{"gateways.d/fine.json", R"({"name": "fine", "connectors": {}})"},
         Document{"gateways.d/two.json", R"({"name": "two", "approval_timeout_seconds": 0,
                                             "connectors": {"github": {"preset": "readonly"}}})"}});
    EXPECT_FALSE(result.ok());
    EXPECT_EQ(result.config, nullptr);
    EXPECT_NE(find_error(result.errors, "gateways.d/one.json", "/enforcment"), nullptr) << format_errors(result.errors);
    EXPECT_NE(find_error(result.errors, "gateways.d/one.json", "/connectors/githb"), nullptr);
    EXPECT_NE(find_error(result.errors, "gateways.d/two.json", "/approval_timeout_seconds"), nullptr);
    EXPECT_NE(find_error(result.errors, "gateways.d/two.json", "/connectors/github/preset"), nullptr);
    for (const auto& error : result.errors) EXPECT_NE(error.file, "gateways.d/fine.json") << error.to_string();
}

TEST(ConfigErrors, ErrorsInConnectorFilesAndGatewayFilesAreReportedTogether) {
    auto docs = shipped_connectors();
    docs.push_back(
        Document{"connectors.d/acme.json", acme(R"([{"method": "GET", "path": "/a", "action": "other.a"}])")});
    const auto result = load_config(docs, {Document{"gateways.d/bot.json", "{ nope"}});
    EXPECT_FALSE(result.ok());
    EXPECT_NE(find_error(result.errors, "connectors.d/acme.json", "/routes/0/action"), nullptr)
        << format_errors(result.errors);
    EXPECT_NE(find_error(result.errors, "gateways.d/bot.json", ""), nullptr) << format_errors(result.errors);
}

// ---------------------------------------------------------------------------
// Connector files

TEST(ConfigErrors, AConnectorActionMustStartWithTheConnectorName) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a", "action": "github.a"}])"), "/routes/0/action",
                             "does not start with \"acme.\"", "acme.");
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a", "action": "acme."}])"), "/routes/0/action",
                             "does not start with", "acme.");
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a", "action": "acmex.a"}])"), "/routes/0/action",
                             "does not start with", "acme.");
}

TEST(ConfigErrors, AnUnknownPlaceholderInAnActionIsRefused) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/items/{id}", "action": "acme.item.{name}"}])"),
                             "/routes/0/action", "unknown placeholder {name}", "{method}");
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a", "action": "acme.a",
        "variants": [{"when": {"field": "x", "equals": "1"}, "action": "acme.{x}"}]}])"),
                             "/routes/0/variants/0/action", "unknown placeholder {x}", "{method}");
}

TEST(ConfigErrors, AKnownPlaceholderInAnActionIsAccepted) {
    const auto result = load_connector(
        acme(R"([{"method": ["GET", "POST"], "path": "/items/{kind}", "action": "acme.{kind}.{method}"}])"));
    EXPECT_TRUE(result.ok()) << format_errors(result.errors);
}

TEST(ConfigErrors, ABadPathTemplateIsRefused) {
    for (const char* path : {"/a{b}", "/{b}c", "/{}", "/{1x}", "/{a-b}", "/{+}"}) {
        SCOPED_TRACE(path);
        expect_refused_connector(
            acme(std::string(R"([{"method": "GET", "path": ")") + path + R"(", "action": "acme.a"}])"),
            "/routes/0/path", "bad parameter segment", "whole segment");
    }
}

TEST(ConfigErrors, APathTemplateNotStartingWithASlashIsRefused) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "items", "action": "acme.a"}])"), "/routes/0/path",
                             "does not start with '/'");
}

TEST(ConfigErrors, AGreedyParameterThatIsNotLastIsRefused) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/files/{path+}/meta", "action": "acme.file.meta"}])"),
                             "/routes/0/path", "must be the last segment");
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/files/{path*}/meta", "action": "acme.file.meta"}])"),
                             "/routes/0/path", "must be the last segment");
}

TEST(ConfigErrors, AParameterNamedTwiceInAPathIsRefused) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/a/{id}/b/{id}", "action": "acme.a"}])"),
                             "/routes/0/path", "appears twice");
}

TEST(ConfigErrors, ADuplicateRouteIsRefused) {
    expect_refused_connector(acme(R"([{"method": "GET", "path": "/items/{id}", "action": "acme.item.get"},
                                      {"method": "POST", "path": "/items/{id}", "action": "acme.item.update"},
                                      {"method": ["PUT", "GET"], "path": "/Items/{key}", "action": "acme.item.other"}])"),
                             "/routes/2", "duplicate of route \"/items/{id}\"", "merge");
    expect_refused_connector(acme(R"([{"method": "*", "path": "/f/{p+}", "action": "acme.a"},
                                      {"method": "*", "path": "/f/{q+}", "action": "acme.b"}])"),
                             "/routes/1", "duplicate", "merge");
}

TEST(ConfigErrors, AnUnknownHttpMethodIsRefused) {
    expect_refused_connector(acme(R"([{"method": "get", "path": "/a", "action": "acme.a"}])"), "/routes/0/method",
                             "unknown HTTP method \"get\"", "upper case");
    expect_refused_connector(acme(R"([{"method": ["GET", "FETCH"], "path": "/a", "action": "acme.a"}])"),
                             "/routes/0/method/1", "unknown HTTP method \"FETCH\"", "upper case");
}

TEST(ConfigErrors, AVariantWithBothEqualsAndPresentIsRefused) {
    expect_refused_connector(acme(R"([{"method": "PATCH", "path": "/items/{id}", "action": "acme.item.update",
        "variants": [{"when": {"field": "state", "equals": "closed", "present": true}, "action": "acme.item.close"}]}])"),
                             "/routes/0/variants/0/when", "exactly one of");
    expect_refused_connector(acme(R"([{"method": "PATCH", "path": "/items/{id}", "action": "acme.item.update",
        "variants": [{"when": {"field": "state"}, "action": "acme.item.close"}]}])"),
                             "/routes/0/variants/0/when", "exactly one of");
}

TEST(ConfigErrors, AConnectorCredentialFormatWithoutSecretIsRefused) {
    expect_refused_connector(acme("[]", R"( "credential": {"header": "Authorization", "format": "Bearer"},)"),
                             "/credential/format", "{secret}", "{secret}");
}

TEST(ConfigErrors, AnInvalidConnectorNameIsRefused) {
    expect_refused_connector(R"({"name": "Acme", "routes": []})", "/name", "invalid connector name", "lower-case");
}

// json_reader.h: "every type mismatch ... becomes a ConfigError naming the
// file, the JSON pointer and a hint"; shape errors in connector files too.
TEST(ConfigErrors, TypeAndShapeErrorsCarryAHint) {
    struct Case {
        LoadResult result;
        std::string file;
        std::string pointer;
    };
    const std::string gw = "gateways.d/bot.json";
    const std::string cf = "connectors.d/acme.json";
    const std::vector<Case> cases{
        {load_gateway(R"({"name": "bot", "connectors": "github"})"), gw, "/connectors"},
        {load_gateway(with_github(R"({"rules": {}})")), gw, "/connectors/github/rules"},
        {load_gateway(R"({"name": 7, "connectors": {}})"), gw, "/name"},
        {load_gateway(R"({"name": "bot", "connectors": {}, "approval_timeout_seconds": 1.5})"), gw,
         "/approval_timeout_seconds"},
        {load_gateway(policy(R"({"name": "p", "decision": "deny",
            "when": {"field": "action", "op": "equals", "value": {"a": 1}}})")),
         gw, "/policies/0/when/value"},
        {load_connector(acme(R"([{"method": "GET", "path": "/f/{p+}/x", "action": "acme.a"}])")), cf, "/routes/0/path"},
        {load_connector(acme(R"([{"method": "GET", "path": "/a", "action": "acme.a",
            "variants": [{"when": {"field": "s", "equals": "x", "present": true}, "action": "acme.b"}]}])")),
         cf, "/routes/0/variants/0/when"},
        {load_connector(R"({"name": "acme", "routes": [], "credential": {"header": true, "format": "{secret}"}})"), cf,
         "/credential/header"},
    };
    for (const auto& c : cases) {
        const ConfigError* error = find_error(c.result.errors, c.file, c.pointer);
        ASSERT_NE(error, nullptr) << c.pointer << ":\n" << format_errors(c.result.errors);
        EXPECT_FALSE(error->hint.empty()) << "no hint: " << error->to_string();
    }
}

// ---------------------------------------------------------------------------
// Reload and formatting

TEST(ConfigErrors, ReloadWithABrokenConfigKeepsThePreviousSnapshot) {
    const std::vector<Document> good{
        Document{"gateways.d/bot.json", R"({"name": "bot", "connectors": {"github": {"preset": "read_only"}}})"}};
    const auto first = load_config(shipped_connectors(), good);
    ASSERT_TRUE(first.ok()) << format_errors(first.errors);
    ConfigStore store(first.config);
    const auto before = store.snapshot();
    ASSERT_EQ(before, first.config);

    const auto errors = store.reload(shipped_connectors(), {Document{"gateways.d/bot.json", R"({"name": "bot",
        "connectors": {"github": {"preset": "read_onyl"}}})"}});
    EXPECT_FALSE(errors.empty());
    EXPECT_NE(find_error(errors, "gateways.d/bot.json", "/connectors/github/preset"), nullptr) << format_errors(errors);
    EXPECT_EQ(store.snapshot(), before);  // the same object, not a copy
    EXPECT_NE(store.snapshot()->gateway("bot"), nullptr);
}

TEST(ConfigErrors, ReloadWithAGoodConfigReplacesTheSnapshot) {
    ConfigStore store;
    const auto empty = store.snapshot();
    ASSERT_NE(empty, nullptr);
    EXPECT_TRUE(empty->gateways.empty());

    const auto errors =
        store.reload(shipped_connectors(), {Document{"gateways.d/a.json", R"({"name": "a", "connectors": {}})"}});
    EXPECT_TRUE(errors.empty()) << format_errors(errors);
    const auto second = store.snapshot();
    EXPECT_NE(second, empty);
    EXPECT_NE(second->gateway("a"), nullptr);

    EXPECT_TRUE(
        store.reload(shipped_connectors(), {Document{"gateways.d/b.json", R"({"name": "b", "connectors": {}})"}})
            .empty());
    const auto third = store.snapshot();
    EXPECT_NE(third, second);
    EXPECT_EQ(third->gateway("a"), nullptr);
    EXPECT_NE(third->gateway("b"), nullptr);
    // A reader's old snapshot stays valid after the swap.
    EXPECT_NE(second->gateway("a"), nullptr);
}

TEST(ConfigErrors, ToStringHasFilePositionPointerMessageAndHint) {
    const ConfigError error{"gateways.d/bot.json",        "/connectors/github/preset",  3, 17,
                            "unknown value \"readonly\"", "did you mean \"read_only\"?"};
    const std::string text = error.to_string();
    EXPECT_EQ(text,
              "gateways.d/bot.json:3:17: /connectors/github/preset: unknown value \"readonly\" "
              "(hint: did you mean \"read_only\"?)");
}

TEST(ConfigErrors, ToStringOfARealErrorContainsEveryPart) {
    const auto result = load_gateway(R"({"name": "bot", "enforcment": "full", "connectors": {}})");
    ASSERT_FALSE(result.errors.empty());
    const ConfigError& error = result.errors.front();
    const std::string text = error.to_string();
    EXPECT_NE(text.find("gateways.d/bot.json"), std::string::npos) << text;
    EXPECT_NE(text.find("/enforcment"), std::string::npos) << text;
    EXPECT_NE(text.find(error.message), std::string::npos) << text;
    EXPECT_NE(text.find(error.hint), std::string::npos) << text;
    EXPECT_NE(text.find("hint"), std::string::npos) << text;
    EXPECT_NE(format_errors(result.errors).find(text + "\n"), std::string::npos);
}

TEST(ConfigErrors, ToStringLeavesOutWhatIsUnknown) {
    const ConfigError whole_file{"a.json", "", 0, 0, "broken", ""};
    EXPECT_EQ(whole_file.to_string(), "a.json: broken");
    const ConfigError no_file{"", "/x", 0, 0, "broken", "fix it"};
    EXPECT_EQ(no_file.to_string(), "<config>: /x: broken (hint: fix it)");
}

TEST(ConfigErrors, ToStringOfASyntaxErrorHasLineAndColumn) {
    const auto result = load_gateway("{\n  \"name\": \"bot\",\n  ]\n}");
    ASSERT_EQ(result.errors.size(), 1u);
    const std::string text = result.errors.front().to_string();
    EXPECT_EQ(text.rfind("gateways.d/bot.json:3:3: ", 0), 0u) << text;
}

// ---------------------------------------------------------------------------
// The sandbox fields: run_as, keep_groups, unix_sockets, require_layers, proc.

TEST(ConfigErrors, SandboxFieldsLoadWithTheirDefaultsAndAsGiven) {
    const auto defaults = load_gateway(with_github("{}"));
    ASSERT_TRUE(defaults.ok()) << format_errors(defaults.errors);
    const Gateway& plain = *defaults.config->gateway("bot");
    EXPECT_EQ(plain.run_as, "dynamic");
    EXPECT_TRUE(plain.keep_groups.empty());
    EXPECT_EQ(plain.unix_sockets, default_unix_sockets());
    EXPECT_TRUE(plain.require_layers.empty());
    EXPECT_TRUE(plain.proc_pids_only);
    for (const char* variable :
         {"SSH_AUTH_SOCK", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY"}) {
        EXPECT_NE(std::find(plain.strip_environment.begin(), plain.strip_environment.end(), variable),
                  plain.strip_environment.end())
            << variable;
    }

    const auto given = load_gateway(with_github("{}", R"(, "run_as": "builder", "keep_groups": ["docker"],
        "unix_sockets": ["/run/app.sock", "/srv/sockets/", "@app"], "require_layers": ["unix_socket_filter"],
        "proc": "full")"));
    ASSERT_TRUE(given.ok()) << format_errors(given.errors);
    const Gateway& set = *given.config->gateway("bot");
    EXPECT_EQ(set.run_as, "builder");
    EXPECT_EQ(set.keep_groups, std::vector<std::string>{"docker"});
    EXPECT_EQ(set.unix_sockets, (std::vector<std::string>{"/run/app.sock", "/srv/sockets/", "@app"}));
    EXPECT_EQ(set.require_layers, std::vector<std::string>{"unix_socket_filter"});
    EXPECT_FALSE(set.proc_pids_only);
}

TEST(ConfigErrors, AUnixSocketEntryThatCouldBeFooledIsRefused) {
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["run/app.sock"])"), "/unix_sockets/0",
                           "not an absolute path", "absolute path");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["/ok.sock", "/srv/../run/user/1000/bus"])"),
                           "/unix_sockets/1", "'.' or '..'", "absolute path");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["/srv//x.sock"])"), "/unix_sockets/0",
                           "empty path component");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["@"])"), "/unix_sockets/0",
                           "abstract name is empty");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["/run/ok.sock\u0000/run/user/1000/bus"])"),
                           "/unix_sockets/0", "a NUL byte");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": [")" + std::string(120, 'a') + R"("])"),
                           "/unix_sockets/0", "not an absolute path");
    expect_refused_gateway(with_github("{}", R"(, "unix_sockets": ["/)" + std::string(120, 'a') + R"("])"),
                           "/unix_sockets/0", "longer than a unix socket address");
}

TEST(ConfigErrors, AFilesystemSectionAddsToTheDefaults) {
    const auto defaults = load_gateway(with_github("{}"));
    ASSERT_TRUE(defaults.ok()) << format_errors(defaults.errors);
    const FilesystemRules& plain = defaults.config->gateway("bot")->filesystem;
    EXPECT_EQ(plain.write, default_filesystem().write);
    EXPECT_EQ(plain.hide, default_filesystem().hide);
    EXPECT_TRUE(plain.private_tmp);

    const auto given = load_gateway(with_github("{}", R"(, "filesystem": {"write": ["/srv/cache", "!~/.npm"],
        "hide": ["~/.config/*-token"], "protect": ["Makefile"], "private_tmp": false})"));
    ASSERT_TRUE(given.ok()) << format_errors(given.errors);
    const FilesystemRules& set = given.config->gateway("bot")->filesystem;
    EXPECT_EQ(set.write.back(), "/srv/cache");
    EXPECT_EQ(std::count(set.write.begin(), set.write.end(), "~/.npm"), 0);
    EXPECT_EQ(set.hide.back(), "~/.config/*-token");
    EXPECT_EQ(set.hide.size(), default_filesystem().hide.size() + 1);
    EXPECT_EQ(set.protect.back(), "Makefile");
    EXPECT_FALSE(set.private_tmp);
}

TEST(ConfigErrors, ABadFilesystemEntryIsRefusedWithItsPointer) {
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"hide": ["~/.ssh", "~/../etc"]})"),
                           "/filesystem/hide/1", "invalid hide entry \"~/../etc\": a '..' component", "absolute path");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"write": ["!/srv"]})"), "/filesystem/write/0",
                           "not a default entry");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"protect": ["~bob/.bashrc"]})"),
                           "/filesystem/protect/0", "'~user' is not supported");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"write": ["/"]})"), "/filesystem/write/0",
                           "the whole file system");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"writable": ["/srv"]})"), "/filesystem/writable",
                           "unknown field");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": {"private_tmp": "yes"})"), "/filesystem/private_tmp",
                           "expected true or false");
    expect_refused_gateway(with_github("{}", R"(, "filesystem": ["/srv"])"), "/filesystem", "object");
}

TEST(ConfigErrors, AnUnknownLayerOrRunAsOrProcIsRefusedWithTheChoices) {
    expect_refused_gateway(with_github("{}", R"(, "require_layers": ["landlok"])"), "/require_layers/0",
                           "unknown sandbox layer \"landlok\"", "landlock");
    expect_refused_gateway(with_github("{}", R"(, "run_as": "-rf")"), "/run_as", "invalid run_as", "dynamic");
    expect_refused_gateway(with_github("{}", R"(, "proc": "all")"), "/proc", "unknown value \"all\"", "pids");
    expect_refused_gateway(with_github("{}", R"(, "keep_groups": "docker")"), "/keep_groups", "array");
}

// Issue 22's fields: SDK variables, SSH remotes, encoded slashes, comments.
TEST(ConfigErrors, ConnectorEnvironmentSshRemotesAndEncodedSlashAreChecked) {
    const std::string routes = R"([{"method": "GET", "path": "/x", "action": "acme.x.get"}])";
    expect_refused_connector(
        acme(routes,
             R"( "credential": {"header": "Authorization", "format": "Bearer {secret}", "environment": ["1KEY"]},)"),
        "/credential/environment/0", "invalid environment variable name \"1KEY\"", "OPENAI_API_KEY");
    expect_refused_connector(
        acme(
            routes,
            R"( "credential": {"header": "Authorization", "format": "Bearer {secret}", "environment": ["TAMEFLARE_X"]},)"),
        "/credential/environment/0", "is set by the daemon");
    expect_refused_connector(
        acme(
            routes,
            R"( "credential": {"header": "Authorization", "format": "Bearer {secret}", "environment": ["HTTPS_PROXY"]},)"),
        "/credential/environment/0", "is set by the daemon");
    expect_refused_connector(acme(routes, R"( "ssh_remotes": ["git.acme.test"],)"), "/ssh_remotes/0",
                             "is not one of the connector's domains", "domains");
    expect_refused_connector(acme(routes, R"( "encoded_slash": "split",)"), "/encoded_slash", "split");
    // And the good spellings load.
    const auto good =
        load_connector(acme(routes, R"( "credential": {"header": "Authorization", "format": "Bearer {secret}",
        "environment": ["ACME_API_KEY"]}, "ssh_remotes": ["api.acme.test"], "encoded_slash": "separator",)"));
    EXPECT_TRUE(good.ok()) << format_errors(good.errors);
}

TEST(ConfigErrors, ACommentMustBeText) {
    expect_refused_gateway(R"({"name": "bot", "comment": 7, "connectors": {}})", "/comment", "string");
    expect_refused_gateway(
        with_github(R"({"rules": [{"action": "github.pr.list", "decision": "allow", "comment": []}]})"),
        "/connectors/github/rules/0/comment", "string");
    expect_refused_gateway(with_github(R"({"comment": {}})"), "/connectors/github/comment", "string");
    expect_refused_gateway(with_github("{}", R"(, "tcp": [{"host": "db.test", "port": 5432, "comment": false}])"),
                           "/tcp/0/comment", "string");
    const auto good = load_gateway(with_github(
        R"({"comment": "c", "rules": [{"action": "github.pr.list", "decision": "allow", "comment": "seen 2 times"}]})",
        R"(, "comment": "drafted", "tcp": [{"host": "db.test", "port": 5432, "comment": "seen once"}])"));
    EXPECT_TRUE(good.ok()) << format_errors(good.errors);
}

}  // namespace
}  // namespace tameflare::policy
