// The example gateways of docs/recipes.md (shipped under
// /usr/share/doc/tameflare/examples/gateways): each decides the requests its
// recipe names as the recipe says. Not the agents themselves (none of them
// runs here): what the policy makes of their requests.
#include "policy/engine.h"
#include "policy/explain.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <tuple>

namespace tameflare::policy {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const Config> examples() {
    std::vector<Document> gateways;
    for (const auto& entry : fs::directory_iterator(fs::path(TF_SOURCE_DIR) / "examples" / "gateways.d")) {
        gateways.push_back({entry.path().string(), testing::read_text(entry.path())});
    }
    auto result = load_config(testing::shipped_connectors(), gateways);
    EXPECT_TRUE(result.ok()) << format_errors(result.errors);
    return result.config;
}

struct Expected {
    std::string gateway;
    std::string request;  // "METHOD https://host/path"
    Verdict verdict;
    std::string action;
};

TEST(Examples, EachRecipesGatewayDecidesItsAgentsRequestsAsTheRecipeSays) {
    const auto config = examples();
    ASSERT_TRUE(config);
    const std::vector<Expected> table{
        {"claude-code", "POST https://api.anthropic.com/v1/messages", Verdict::forward, "anthropic.message.create"},
        {"claude-code", "GET https://api.github.com/repos/o/r/pulls", Verdict::forward, "github.pr.list"},
        {"claude-code", "POST https://api.github.com/repos/o/r/pulls", Verdict::forward, "github.pr.create"},
        {"claude-code", "POST https://github.com/o/r.git/git-receive-pack", Verdict::forward, "github.git.push"},
        {"claude-code", "PUT https://api.github.com/repos/o/r/pulls/7/merge", Verdict::hold, "github.pr.merge"},
        {"claude-code", "PUT https://api.github.com/repos/o/infra-live/pulls/7/merge", Verdict::deny,
         "github.pr.merge"},
        {"claude-code", "DELETE https://api.github.com/repos/o/r", Verdict::deny, "github.repo.delete"},
        {"claude-code", "GET https://registry.npmjs.org/@types%2fnode", Verdict::forward, "npm.package.get"},
        {"claude-code", "PUT https://registry.npmjs.org/left-pad", Verdict::deny, "npm.package.publish"},
        {"codex", "POST https://api.openai.com/v1/responses", Verdict::forward, "openai.response.create"},
        {"codex", "GET https://index.crates.io/se/rd/serde", Verdict::forward, "crates.index.get"},
        {"codex", "POST https://github.com/o/r.git/git-receive-pack", Verdict::deny, "github.git.push"},
        {"aider", "POST https://api.openai.com/v1/chat/completions", Verdict::forward, "openai.chat.completion.create"},
        {"aider", "POST https://api.anthropic.com/v1/messages", Verdict::forward, "anthropic.message.create"},
        {"aider", "POST https://github.com/o/r.git/git-receive-pack", Verdict::hold, "github.git.push"},
        {"aider", "GET https://pypi.org/simple/aider-chat/", Verdict::forward, "pypi.index.get"},
        {"github-runner", "POST https://broker.actions.githubusercontent.com/message", Verdict::forward, "http.post"},
        {"github-runner", "GET https://github.com/o/r/releases/download/v1/tool.tgz", Verdict::forward,
         "github.release.download"},
        {"github-runner", "GET https://ghcr.io/v2/o/image/manifests/latest", Verdict::forward, "containers.image.pull"},
        {"github-runner", "PUT https://ghcr.io/v2/o/image/manifests/latest", Verdict::deny, "containers.image.push"},
        {"github-runner", "POST https://upload.pypi.org/legacy/", Verdict::deny, "pypi.package.upload"},
        {"github-runner", "POST https://api.github.com/repos/o/r/issues", Verdict::deny, "github.issue.create"},
        {"gitlab-runner", "POST https://gitlab.com/api/v4/jobs/request", Verdict::forward, "http.post"},
        {"gitlab-runner", "PATCH https://gitlab.com/api/v4/jobs/7/trace", Verdict::forward, "http.patch"},
        {"gitlab-runner", "DELETE https://gitlab.com/api/v4/projects/1", Verdict::deny, "http.delete"},
        {"gitlab-runner", "GET https://deb.debian.org/debian/dists/bookworm/InRelease", Verdict::forward,
         "debian.index.get"},
        {"gitlab-runner", "PUT https://registry.gitlab.com/v2/g/p/manifests/1", Verdict::deny, "http.put"},
    };
    for (const auto& expected : table) {
        SCOPED_TRACE(expected.gateway + ": " + expected.request);
        const Gateway* gateway = config->gateway(expected.gateway);
        ASSERT_NE(gateway, nullptr);
        const auto space = expected.request.find(' ');
        const std::string method = expected.request.substr(0, space);
        const auto url = parse_url(expected.request.substr(space + 1));
        ASSERT_TRUE(url);
        EvalContext context;
        context.agent = "example";
        const auto evaluation = evaluate(*gateway, Request{method, url->host, url->target}, context);
        EXPECT_EQ(evaluation.decision.verdict, expected.verdict) << evaluation.decision.reason;
        ASSERT_FALSE(evaluation.actions.empty());
        EXPECT_EQ(evaluation.actions.front().type, expected.action);
    }
}

}  // namespace
}  // namespace tameflare::policy
