// tf policy suggest's drafting: observations in, a gateway file out that
// loads, allows every request that was seen (as it was decided to need a
// human, if it was) and denies what was not.
#include "policy/suggest.h"

#include "policy/engine.h"
#include "test_support.h"

#include <gtest/gtest.h>

namespace tameflare::policy {
namespace {

// The gateway under watch: github with a credential and a preset, a generic
// http instance, a tcp rule.
const char* kWatched = R"({
  "name": "watch", "enforcement": "monitor", "description": "kept as it is",
  "launch": {"users": ["nobody"]},
  "connectors": {
    "github": {"credential": "github-token", "preset": "allow_all"},
    "plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"},
    "unused": {"connector": "openai", "credential": "openai-key", "preset": "allow_all"}
  },
  "tcp": [{"host": "db.internal", "port": 5432}]
})";

std::vector<Observation> session() {
    return {
        {"github", "github.pr.list", "GET", "api.github.com", "/repos/o/r/pulls", "allowed"},
        {"github", "github.pr.list", "GET", "api.github.com", "/repos/o/r/pulls?page=2", "allowed"},
        {"github", "github.pr.merge", "PUT", "api.github.com", "/repos/o/r/pulls/7/merge", "would_require_approval"},
        {"github", "github.unknown", "GET", "api.github.com", "/meta/whatever", "allowed"},
        {"plain", "http.get", "GET", "plain.test", "/a", "allowed"},
        // Hosts no connector of the gateway served: one a shipped connector serves, one none does.
        {"", "http.unknown", "GET", "pypi.org", "/simple/requests/", "would_deny"},
        {"", "http.unknown", "GET", "files.pythonhosted.org", "/packages/ab/cd/requests-2.0.whl", "would_deny"},
        {"", "http.unknown", "POST", "Hooks.Example.NET", "/incoming", "would_deny"},
        {"tcp", "tcp.connect", "", "10.1.2.3", "5432", "denied"},
        {"dns", "dns.query", "A", "pypi.org", "", "would_deny"},
        {"tls", "tls.certificate_refused", "", "pinned.example", "443", "error"},
    };
}

Decision decide(const Gateway& gateway, const std::string& method, const std::string& host, const std::string& target) {
    EvalContext context;
    context.agent = "replay";
    return evaluate(gateway, Request{method, host, target}, context).decision;
}

TEST(Suggest, TheDraftLoadsAllowsWhatWasSeenAndNothingMore) {
    const auto watched = testing::load_or_fail({kWatched});
    ASSERT_TRUE(watched);
    const auto draft = suggest_gateway(*watched, nlohmann::json::parse(kWatched), session(),
                                       SuggestOptions{"watch", "11 records since yesterday"});
    // What the draft says, as a person reads it.
    EXPECT_EQ(draft["enforcement"], "full");
    EXPECT_EQ(draft["description"], "kept as it is");
    EXPECT_EQ(draft["launch"]["users"][0], "nobody");
    EXPECT_NE(draft["comment"].get<std::string>().find("11 records since yesterday"), std::string::npos);
    const auto& github = draft["connectors"]["github"];
    EXPECT_EQ(github["credential"], "github-token");
    EXPECT_FALSE(github.contains("preset")) << "a preset would allow more than was seen";
    ASSERT_EQ(github["rules"].size(), 2U) << github.dump(2);
    EXPECT_EQ(github["rules"][0]["action"], "github.pr.list");
    EXPECT_EQ(github["rules"][0]["decision"], "allow");
    EXPECT_EQ(github["rules"][0]["comment"], "seen 2 times: allowed 2");
    EXPECT_EQ(github["rules"][1]["action"], "github.pr.merge");
    EXPECT_EQ(github["rules"][1]["decision"], "require_approval");
    EXPECT_NE(github["comment"].get<std::string>().find("github.unknown"), std::string::npos);
    EXPECT_FALSE(draft["connectors"].contains("unused"));
    EXPECT_EQ(draft["connectors"]["pypi"]["rules"][0]["action"], "pypi.file.download");
    EXPECT_EQ(draft["connectors"]["pypi"]["rules"][1]["action"], "pypi.index.get");
    const auto& hooks = draft["connectors"]["http-hooks-example-net"];
    EXPECT_EQ(hooks["connector"], "http");
    EXPECT_EQ(hooks["domains"][0], "hooks.example.net");
    EXPECT_EQ(hooks["rules"][0]["action"], "http.post");
    ASSERT_EQ(draft["tcp"].size(), 1U);
    EXPECT_EQ(draft["tcp"][0]["cidr"], "10.1.2.3");
    EXPECT_EQ(draft["tcp"][0]["port"], 5432);

    // Applied: it loads, and decides at full.
    const auto applied = testing::load_or_fail({draft.dump()});
    ASSERT_TRUE(applied);
    const Gateway& gateway = *applied->gateway("watch");
    for (const auto& [method, host, target] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"GET", "api.github.com", "/repos/o/r/pulls"},
             {"GET", "plain.test", "/a"},
             {"GET", "pypi.org", "/simple/requests/"},
             {"GET", "files.pythonhosted.org", "/packages/ab/cd/requests-2.0.whl"},
             {"POST", "hooks.example.net", "/incoming"}}) {
        EXPECT_EQ(decide(gateway, method, host, target).verdict, Verdict::forward) << method << " " << host << target;
    }
    EXPECT_EQ(decide(gateway, "PUT", "api.github.com", "/repos/o/r/pulls/7/merge").verdict, Verdict::hold);
    for (const auto& [method, host, target] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"DELETE", "api.github.com", "/repos/o/r"},   // an action not seen
             {"GET", "api.github.com", "/meta/whatever"},  // github.unknown is never drafted
             {"POST", "plain.test", "/a"},                 // http.post on plain was not seen
             {"GET", "hooks.example.net", "/incoming"},    // nor http.get there
             {"POST", "upload.pypi.org", "/legacy/"},      // publishing was not seen
             {"GET", "api.openai.com", "/v1/models"}}) {   // an instance not used is not kept
        EXPECT_EQ(decide(gateway, method, host, target).verdict, Verdict::deny) << method << " " << host << target;
    }
}

TEST(Suggest, WithoutTheGatewaysFileTheDraftStandsAlone) {
    const auto watched = testing::load_or_fail({kWatched});
    ASSERT_TRUE(watched);
    const auto draft = suggest_gateway(*watched, nullptr, session(), SuggestOptions{"watch", "a test"});
    EXPECT_EQ(draft["connectors"]["plain"]["connector"], "http");
    EXPECT_EQ(draft["connectors"]["plain"]["domains"][0], "plain.test");
    EXPECT_EQ(draft["connectors"]["github"]["credential"], "github-token");
    EXPECT_FALSE(draft.contains("launch"));
    EXPECT_TRUE(testing::load_or_fail({draft.dump()}));
}

}  // namespace
}  // namespace tameflare::policy
