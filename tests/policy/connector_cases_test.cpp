// Every route of every shipped connector, checked against the hand-written
// cases in tests/policy/cases/<connector>.json: the action, its risk and
// access, and the parameters a policy would see.
#include "policy/classify.h"
#include "policy/internal/text.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace tameflare::policy {
namespace {

namespace fs = std::filesystem;

struct Case {
    std::string connector;
    std::size_t index = 0;
    nlohmann::json spec;
};

std::shared_ptr<const Config> connectors() {
    static const auto config = [] {
        auto result = load_config(testing::shipped_connectors(), {});
        EXPECT_TRUE(result.ok()) << format_errors(result.errors);
        return result.config;
    }();
    return config;
}

std::vector<Case> all_cases() {
    std::vector<Case> cases;
    for (const auto& entry : fs::directory_iterator(fs::path(TF_SOURCE_DIR) / "tests/policy/cases")) {
        const auto specs = nlohmann::json::parse(testing::read_text(entry.path()));
        for (std::size_t i = 0; i < specs.size(); ++i) cases.push_back({entry.path().stem().string(), i, specs[i]});
    }
    return cases;
}

struct Classified {
    std::vector<Action> actions;
    std::string host;
};

Classified run(const ConnectorDef& def, const nlohmann::json& spec) {
    const std::string line = spec.at("request");
    const auto space = line.find(' ');
    const std::string method = line.substr(0, space);
    const std::string url = line.substr(space + 1);
    const auto host_start = url.find("://") + 3;
    const auto path_start = url.find('/', host_start);
    const std::string host = url.substr(host_start, path_start - host_start);
    const std::string target = url.substr(path_start);
    std::string body;
    std::string content_type;
    if (spec.contains("body")) {
        if (spec["body"].is_string()) {
            body = spec["body"].get<std::string>();
        } else {
            body = spec["body"].dump();
            content_type = "application/json";
        }
    }
    if (spec.contains("content_type")) content_type = spec["content_type"].get<std::string>();
    Request request{method, host, target, content_type, body};
    return {classify(def, ClassifyOptions{def.name, {}}, request), host};
}

// Numbers compare by value (1 == 1.0), everything else exactly; `expected`
// lists the keys to check, others may exist.
void expect_subset(const nlohmann::json& expected, const nlohmann::json& actual, const std::string& where) {
    for (const auto& [key, value] : expected.items()) {
        ASSERT_TRUE(actual.contains(key)) << where << ": parameter \"" << key << "\" missing in " << actual.dump();
        const auto& got = actual[key];
        if (value.is_number() && got.is_number()) {
            EXPECT_EQ(value.get<double>(), got.get<double>()) << where << ": parameter " << key;
        } else if (value.is_object() && got.is_object()) {
            expect_subset(value, got, where + "." + key);
        } else {
            EXPECT_EQ(value, got) << where << ": parameter " << key;
        }
    }
}

TEST(ConnectorCases, EveryCaseYieldsItsActionRiskAccessAndParameters) {
    const auto config = connectors();
    ASSERT_TRUE(config);
    std::size_t checked = 0;
    for (const auto& c : all_cases()) {
        const std::string where =
            c.connector + ".json[" + std::to_string(c.index) + "] " + c.spec.at("request").get<std::string>();
        const auto def = config->connectors.find(c.connector);
        ASSERT_NE(def, config->connectors.end()) << "cases for a connector that is not shipped: " << c.connector;
        const auto result = run(*def->second, c.spec);
        ASSERT_EQ(result.actions.size(), 1U) << where;
        const Action& action = result.actions.front();
        EXPECT_EQ(action.type, c.spec.at("action").get<std::string>()) << where << " (route: " << action.route << ")";
        EXPECT_EQ(action.provider, c.connector) << where;
        if (c.spec.contains("risk")) {
            EXPECT_EQ(to_string(action.risk), c.spec["risk"].get<std::string>()) << where;
        }
        if (c.spec.contains("access")) {
            EXPECT_EQ(to_string(action.access), c.spec["access"].get<std::string>()) << where;
        }
        expect_subset(c.spec.at("parameters"), action.parameters, where);
        if (action.type.ends_with(".unknown")) {
            EXPECT_EQ(action.risk, Risk::high) << where;
            EXPECT_EQ(action.access, Access::write) << where;
        }
        // The host of every case on a connector with its own domains is one of them.
        if (!def->second->domains.empty()) {
            const auto& domains = def->second->domains;
            EXPECT_NE(std::find(domains.begin(), domains.end(), result.host), domains.end()) << where;
        }
        ++checked;
    }
    EXPECT_GT(checked, 300U);
}

TEST(ConnectorCases, EveryRouteAndVariantOfEveryConnectorHasACase) {
    const auto config = connectors();
    ASSERT_TRUE(config);
    std::map<std::string, std::set<std::string>> seen_routes;
    std::map<std::string, std::set<std::string>> seen_actions;
    for (const auto& c : all_cases()) {
        const auto def = config->connectors.find(c.connector);
        ASSERT_NE(def, config->connectors.end());
        for (const auto& action : run(*def->second, c.spec).actions) {
            seen_routes[c.connector].insert(action.route.substr(action.route.find(' ') + 1));
            seen_actions[c.connector].insert(action.type);
        }
    }
    for (const auto& [name, def] : config->connectors) {
        EXPECT_TRUE(seen_actions.contains(name)) << "connector " << name << " has no test cases";
        for (const auto& route : def->routes) {
            EXPECT_TRUE(seen_routes[name].contains(route.path)) << name << ": no case reaches route " << route.path;
            for (const auto& variant : route.variants) {
                EXPECT_TRUE(seen_actions[name].contains(variant.action))
                    << name << ": no case yields variant " << variant.action << " of " << route.path;
            }
        }
        if (def->jsonrpc) {
            for (const auto& method : def->jsonrpc->methods) {
                if (method.action.find('{') != std::string::npos) continue;
                EXPECT_TRUE(seen_actions[name].contains(method.action)) << name << ": no case yields " << method.action;
            }
        }
        EXPECT_TRUE(seen_actions[name].contains(name + ".unknown")) << name << ": no case for an unmatched request";
    }
}

TEST(ConnectorCases, ShippedConnectorsHaveTheDocumentedActionCounts) {
    const auto config = connectors();
    ASSERT_TRUE(config);
    const std::map<std::string, std::size_t> minimum{{"github", 20}, {"openai", 24}, {"anthropic", 5}, {"stripe", 40},
                                                     {"slack", 35},  {"mcp", 3},     {"webhook", 2},   {"http", 2}};
    for (const auto& [name, count] : minimum) {
        const auto def = config->connectors.find(name);
        ASSERT_NE(def, config->connectors.end()) << name << " is not shipped";
        // static_actions() includes "<name>.unknown"; templated actions (http.{method}) count once per route.
        std::size_t actions = def->second->static_actions().size() - 1;
        for (const auto& route : def->second->routes) actions += route.action.find('{') != std::string::npos ? 1 : 0;
        EXPECT_GE(actions, count) << name;
    }
}

TEST(ConnectorCases, GithubReferenceRoutesMapAsDocumented) {
    // Independent of the case files: the reference table, restated.
    const auto config = connectors();
    ASSERT_TRUE(config);
    const auto& github = *config->connectors.at("github");
    const std::vector<std::tuple<std::string, std::string, std::string, std::string>> table{
        {"POST", "/repos/o/r/pulls", "", "github.pr.create"},
        {"PUT", "/repos/o/r/pulls/7/merge", "", "github.pr.merge"},
        {"PATCH", "/repos/o/r/pulls/7", R"({"title":"t"})", "github.pr.update"},
        {"PATCH", "/repos/o/r/pulls/7", R"({"state":"closed"})", "github.pr.close"},
        {"POST", "/repos/o/r/pulls/7/reviews", "", "github.pr.review"},
        {"POST", "/repos/o/r/issues", "", "github.issue.create"},
        {"PATCH", "/repos/o/r/issues/3", R"({"body":"b"})", "github.issue.update"},
        {"PATCH", "/repos/o/r/issues/3", R"({"state":"closed"})", "github.issue.close"},
        {"POST", "/repos/o/r/git/refs", "", "github.branch.create"},
        {"DELETE", "/repos/o/r/git/refs/heads/x", "", "github.branch.delete"},
        {"POST", "/repos/o/r/releases", "", "github.release.create"},
        {"DELETE", "/repos/o/r/releases/9", "", "github.release.delete"},
        {"PUT", "/repos/o/r/contents/a/b.txt", R"({"content":"eA=="})", "github.file.create"},
        {"PUT", "/repos/o/r/contents/a/b.txt", R"({"content":"eA==","sha":"abc"})", "github.file.update"},
        {"DELETE", "/repos/o/r/contents/a/b.txt", "", "github.file.delete"},
        {"POST", "/user/repos", "", "github.repo.create"},
        {"POST", "/orgs/acme/repos", "", "github.repo.create"},
        {"DELETE", "/repos/o/r", "", "github.repo.delete"},
        {"PATCH", "/repos/o/r", "", "github.repo.update"},
        {"PATCH", "/orgs/acme", "", "github.org.update"},
        {"POST", "/orgs/acme/teams", "", "github.team.create"},
        {"GET", "/o/r.git/info/refs?service=git-upload-pack", "", "github.git.fetch"},
        {"POST", "/o/r.git/git-upload-pack", "", "github.git.fetch"},
        {"GET", "/o/r.git/info/refs?service=git-receive-pack", "", "github.git.push"},
        {"POST", "/o/r.git/git-receive-pack", "", "github.git.push"},
    };
    for (const auto& [method, target, body, expected] : table) {
        const Request request{method, "api.github.com", target, body.empty() ? "" : "application/json", body};
        const auto actions = classify(github, ClassifyOptions{"github", {}}, request);
        ASSERT_EQ(actions.size(), 1U);
        EXPECT_EQ(actions[0].type, expected) << method << " " << target;
    }
}

TEST(ConnectorCases, EnterpriseBaseUrlIsStrippedBeforeMatching) {
    const auto config = testing::load_or_fail({R"({"name": "ghe", "connectors": {"github": {
        "base_url": "https://ghe.example.com/api/v3", "preset": "allow_all"}}})"});
    ASSERT_TRUE(config);
    const Gateway& gateway = *config->gateway("ghe");
    const ConnectorInstance* github = gateway.connector_for_host("GHE.example.com");
    ASSERT_NE(github, nullptr);
    EXPECT_EQ(gateway.connector_for_host("api.github.com"), nullptr);
    const Request merge{"PUT", "ghe.example.com", "/api/v3/repos/o/r/pulls/7/merge"};
    const auto actions = classify(*github->def, ClassifyOptions{github->name, github->base_segments}, merge);
    EXPECT_EQ(actions.at(0).type, "github.pr.merge");
    // git smart-HTTP on the same host is outside the API prefix.
    const Request push{"POST", "ghe.example.com", "/o/r.git/git-receive-pack"};
    EXPECT_EQ(classify(*github->def, ClassifyOptions{github->name, github->base_segments}, push).at(0).type,
              "github.git.push");
}

class Classification : public ::testing::Test {
protected:
    const ConnectorDef& github() { return *connectors()->connectors.at("github"); }
    Action one(const Request& request) {
        auto actions = classify(github(), ClassifyOptions{"github", {}}, request);
        EXPECT_EQ(actions.size(), 1U);
        return actions.front();
    }
};

TEST_F(Classification, EvasiveSpellingsOfAPathStillMatchOrBecomeUnknown) {
    // Case, doubled and trailing slashes and escapes of ordinary characters match the route...
    EXPECT_EQ(one({"PUT", "api.github.com", "/REPOS/o/r/PULLS/7/Merge"}).type, "github.pr.merge");
    EXPECT_EQ(one({"PUT", "api.github.com", "//repos/o/r/pulls/7/merge/"}).type, "github.pr.merge");
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o/r/pulls/7/%6derge"}).type, "github.pr.merge");
    // ...while what an upstream might resolve differently is never guessed at.
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o/r/pulls/7/x/../merge"}).type, "github.unknown");
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o/r/pulls/7/%2e%2e/merge"}).type, "github.unknown");
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o%2Fr/pulls/7/merge"}).type, "github.unknown");
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o/r/pulls/7/merge%00"}).type, "github.unknown");
    EXPECT_EQ(one({"PUT", "api.github.com", "/repos/o/r/pulls/7/%zzmerge"}).type, "github.unknown");
    EXPECT_EQ(one({"PUT", "api.github.com", "repos/o/r/pulls/7/merge"}).type, "github.unknown");
}

TEST_F(Classification, MethodOverrideHeaderMakesTheRequestUnknown) {
    Request request{"POST", "api.github.com", "/repos/o/r/pulls"};
    request.method_override = "DELETE";
    EXPECT_EQ(one(request).type, "github.unknown");
    request.method_override = "post";  // the same method is harmless
    EXPECT_EQ(one(request).type, "github.pr.create");
}

TEST_F(Classification, HeadUsesTheGetRoute) {
    const Action action = one({"HEAD", "api.github.com", "/repos/o/r/pulls/7"});
    EXPECT_EQ(action.type, "github.pr.get");
    EXPECT_EQ(action.access, Access::read);
}

TEST_F(Classification, AFieldThatQueryAndBodyDisagreeOnIsNotClassified) {
    // GitHub reads the body; a query "state=open" must not hide a close.
    const Request request{"PATCH", "api.github.com", "/repos/o/r/pulls/7?state=open", "application/json",
                          R"({"state":"closed"})"};
    EXPECT_EQ(one(request).type, "github.unknown");
    const Request same{"PATCH", "api.github.com", "/repos/o/r/pulls/7?state=closed", "application/json",
                       R"({"state":"closed"})"};
    EXPECT_EQ(one(same).type, "github.pr.close");
}

TEST_F(Classification, ABodyCutAtTheBoundPicksTheMostSevereVariantAndMarksParametersIncomplete) {
    Request request{"PATCH", "api.github.com", "/repos/o/r/pulls/7", "application/json", R"({"title": "a very long)"};
    request.body_complete = false;
    const Action action = one(request);
    EXPECT_EQ(action.type, "github.pr.close");
    EXPECT_FALSE(action.parameters_complete);
}

TEST_F(Classification, AMalformedJsonBodyLeavesParametersIncomplete) {
    const Action action = one({"POST", "api.github.com", "/repos/o/r/pulls", "application/json", R"({"title": )"});
    EXPECT_EQ(action.type, "github.pr.create");
    EXPECT_FALSE(action.parameters_complete);
}

TEST_F(Classification, ABodyOfAnUnreadableTypeLeavesParametersIncomplete) {
    const Action action = one({"POST", "api.github.com", "/repos/o/r/pulls", "text/plain", "title=x"});
    EXPECT_FALSE(action.parameters_complete);
    const Action no_body = one({"POST", "api.github.com", "/repos/o/r/pulls", "text/plain", ""});
    EXPECT_TRUE(no_body.parameters_complete);
}

TEST_F(Classification, JsonSentAsAFormIsNotTrusted) {
    // Some upstreams read JSON whatever the Content-Type says; a form parse of
    // it would show fields the upstream does not see, and hide the ones it does.
    const auto& slack = *connectors()->connectors.at("slack");
    const Request request{"POST", "slack.com", "/api/chat.postMessage", "application/x-www-form-urlencoded",
                          R"({"channel": "C1", "text": "hi"})"};
    EXPECT_FALSE(classify(slack, ClassifyOptions{"slack", {}}, request).at(0).parameters_complete);
    // GitHub's connector reads bodies as JSON, as GitHub does.
    const Request close{"PATCH", "api.github.com", "/repos/o/r/pulls/7", "application/x-www-form-urlencoded",
                        R"({"state": "closed"})"};
    EXPECT_EQ(one(close).type, "github.pr.close");
}

TEST_F(Classification, ATruncatedFormBodyDropsItsLastPartialPair) {
    const auto& stripe = *connectors()->connectors.at("stripe");
    Request request{"POST", "api.stripe.com", "/v1/transfers", "application/x-www-form-urlencoded",
                    "currency=usd&amount=200"};  // really amount=20000, cut
    request.body_complete = false;
    const auto actions = classify(stripe, ClassifyOptions{"stripe", {}}, request);
    EXPECT_EQ(actions.at(0).parameters.value("currency", ""), "usd");
    EXPECT_FALSE(actions.at(0).parameters.contains("amount"));
    EXPECT_FALSE(actions.at(0).parameters_complete);
}

TEST(JsonRpc, ABatchYieldsOneActionPerCall) {
    const auto& mcp = *connectors()->connectors.at("mcp");
    const std::string body = R"([{"jsonrpc":"2.0","id":1,"method":"tools/list"},
                                 {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_db"}}])";
    const auto actions =
        classify(mcp, ClassifyOptions{"tools", {}}, {"POST", "mcp.example.com", "/mcp", "application/json", body});
    ASSERT_EQ(actions.size(), 2U);
    EXPECT_EQ(actions[0].type, "mcp.tools.list");
    EXPECT_EQ(actions[1].type, "mcp.tools.drop_db");
    EXPECT_EQ(actions[1].connector, "tools");
    EXPECT_EQ(actions[1].parameters["rpc_id"], 2);
}

TEST(JsonRpc, EmptyOversizedOrMalformedBatchesAreUnknown) {
    const auto& mcp = *connectors()->connectors.at("mcp");
    const auto type_of = [&](const std::string& body, bool complete = true) {
        Request request{"POST", "mcp.example.com", "/mcp", "application/json", body};
        request.body_complete = complete;
        const auto actions = classify(mcp, ClassifyOptions{"mcp", {}}, request);
        return actions.size() == 1 ? actions[0].type : "(" + std::to_string(actions.size()) + " actions)";
    };
    EXPECT_EQ(type_of("[]"), "mcp.unknown");
    EXPECT_EQ(type_of(R"([{"method":"ping"}, 5])"), "mcp.unknown");
    EXPECT_EQ(type_of(R"({"method": 7})"), "mcp.unknown");
    EXPECT_EQ(type_of(R"({"method":"ping"})", false), "mcp.unknown");
    std::string big = "[";
    for (int i = 0; i < 101; ++i) big += std::string(i ? "," : "") + R"({"method":"ping"})";
    big += "]";
    EXPECT_EQ(type_of(big), "mcp.unknown");
}

}  // namespace
}  // namespace tameflare::policy
