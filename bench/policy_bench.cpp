// Policy evaluation cost against gateways of 10, 100 and 1,000 rules.
//
// Each gateway has the shipped connectors' github, openai and mcp enabled. The
// rules are spread as a real gateway would have them: exact rules and
// wildcards on github, and the rest on an MCP server's tools (exact names and
// per-group wildcards, the worst case: MCP actions are dynamic, so they are
// not precomputed). Five condition policies, two of which look at the merge
// request, one of them at a body field (so its body is parsed);
// BM_DecidePolicies scales the policies instead.
//
// Baseline (measured in the same run): classification alone, and a gateway
// with no rules at all, so the cost of rules is the difference.
#include "daemon/daemon_config.h"
#include "policy/classify.h"
#include "policy/engine.h"

#include <benchmark/benchmark.h>

#include <stdexcept>

namespace {

using namespace tameflare::policy;

std::vector<Document> connectors() {
    tameflare::daemon::DaemonConfig config;
    config.connector_dirs = {std::string(TF_SOURCE_DIR) + "/connectors"};
    config.gateways_dir = "/nonexistent";
    ConfigErrors errors;
    return tameflare::daemon::read_policy_files(config, errors).connectors;
}

std::string gateway_json(int rules, int policy_count = 5) {
    nlohmann::json github_rules = nlohmann::json::array();
    nlohmann::json mcp_rules = nlohmann::json::array();
    nlohmann::json policies = nlohmann::json::array();
    const std::vector<std::string> github_actions{"github.pr.create",    "github.pr.update",    "github.pr.review",
                                                  "github.issue.create", "github.issue.update", "github.branch.create",
                                                  "github.file.create",  "github.file.update",  "github.release.create",
                                                  "github.team.create",  "github.repo.update",  "github.pr.list"};
    int count = 0;
    const int github_share = std::min(rules / 2, 40);
    for (int i = 0; i < github_share; ++i, ++count) {
        if (i % 4 == 3) {
            github_rules.push_back(
                {{"action", "github.*." + std::string(i % 8 == 3 ? "delete" : "close")}, {"decision", "deny"}});
        } else {
            github_rules.push_back({{"action", github_actions[static_cast<std::size_t>(i) % github_actions.size()]},
                                    {"decision", i % 5 == 0 ? "require_approval" : "allow"}});
        }
    }
    github_rules.push_back({{"action", "github.pr.merge"}, {"decision", "allow"}});
    ++count;
    for (int i = 0; count < rules; ++i, ++count) {
        if (i % 2 == 0) {
            mcp_rules.push_back({{"action", "mcp.tools.tool_" + std::to_string(i)}, {"decision", "allow"}});
        } else {
            mcp_rules.push_back(
                {{"action", "mcp.tools.group" + std::to_string(i) + "_*"}, {"decision", "require_approval"}});
        }
    }
    for (int i = 0; i < policy_count; ++i) {
        policies.push_back(
            {{"name", "p" + std::to_string(i)},
             {"actions", {i % 2 ? "github.pr.*" : "mcp.tools.group" + std::to_string(i * 18 + 1) + "_*"}},
             {"when",
              {{"all",
                // Every other policy on github reads a body field, so a merge's body is parsed.
                {{{"field", i % 4 == 1 ? "parameters.merge_method" : "parameters.repo"},
                  {"op", "equals"},
                  {"value", "rebase" + std::to_string(i)}},
                 {{"field", "agent"}, {"op", "glob"}, {"value", "ci-*"}}}}}},
             {"decision", "deny"}});
    }
    nlohmann::json gateway{
        {"name", "bench"},
        {"rate_limit", {{"requests", 0}}},
        {"connectors",
         {{"github", {{"rules", github_rules}}},
          {"openai", {{"preset", "allow_all"}}},
          {"mcp", {{"domains", {"mcp.example.com"}}, {"rules", mcp_rules}}}}},
        {"policies", rules == 0 ? nlohmann::json::array() : policies},
    };
    return gateway.dump();
}

std::shared_ptr<const Config> load(int rules, int policy_count = 5) {
    auto result = load_config(connectors(), {{"bench.json", gateway_json(rules, policy_count)}});
    if (!result.ok()) throw std::runtime_error(format_errors(result.errors));
    return result.config;
}

const Request kMerge{"PUT", "api.github.com", "/repos/octo/hello/pulls/7/merge", "application/json",
                     R"({"commit_title": "Release 2.1", "merge_method": "squash"})"};
const Request kToolCall{
    "POST", "mcp.example.com", "/mcp", "application/json",
    R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"group37_deploy","arguments":{"env":"staging"}}})"};

void run_evaluate(benchmark::State& state, const Request& request) {
    const auto config = load(static_cast<int>(state.range(0)));
    const Gateway& gateway = *config->gateway("bench");
    RateLimiter limiter;
    const EvalContext context{"agent-1", {}, nullptr, &limiter};
    for (auto _ : state) {
        auto evaluation = evaluate(gateway, request, context);
        benchmark::DoNotOptimize(evaluation);
    }
    state.counters["rules"] = static_cast<double>(state.range(0));
}

// The whole policy step: classify the request, then decide it.
void BM_EvaluateGithubMerge(benchmark::State& state) {
    run_evaluate(state, kMerge);
}
void BM_EvaluateMcpToolCall(benchmark::State& state) {
    run_evaluate(state, kToolCall);
}

// Deciding the classified merge (every parameter read) on `config`.
void run_decide(benchmark::State& state, const Config& config) {
    const Gateway& gateway = *config.gateway("bench");
    const ConnectorInstance* github = gateway.connector_for_host("api.github.com");
    const auto actions = classify(*github->def, ClassifyOptions{github->name, github->base_segments}, kMerge);
    const EvalContext context{"agent-1"};
    for (auto _ : state) {
        auto decision = decide(gateway, github, actions, context);
        benchmark::DoNotOptimize(decision);
    }
}

// Deciding an already classified action: the cost the rules add.
void BM_DecideGithubMerge(benchmark::State& state) {
    run_decide(state, *load(static_cast<int>(state.range(0))));
}

// Condition policies that all apply to the request: their cost each.
void BM_DecidePolicies(benchmark::State& state) {
    run_decide(state, *load(100, static_cast<int>(state.range(0)) * 2));
    state.counters["policies"] = static_cast<double>(state.range(0));
}

// Baseline: classification alone (no rules involved).
void BM_ClassifyGithubMerge(benchmark::State& state) {
    const auto config = load(0);
    const ConnectorInstance* github = config->gateway("bench")->connector_for_host("api.github.com");
    for (auto _ : state) {
        auto actions = classify(*github->def, ClassifyOptions{github->name, github->base_segments}, kMerge);
        benchmark::DoNotOptimize(actions);
    }
}

BENCHMARK(BM_ClassifyGithubMerge);
BENCHMARK(BM_DecideGithubMerge)->Arg(0)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(BM_EvaluateGithubMerge)->Arg(0)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(BM_EvaluateMcpToolCall)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(BM_DecidePolicies)->Arg(1)->Arg(10)->Arg(100);

}  // namespace
