// Feeds arbitrary requests to classification and decision on a gateway that
// enables every shipped connector. The input is split on the first four
// newlines into method, host, target, content type and body; the first byte
// of the body decides whether it counts as cut short.
#include "fuzz_support.h"

#include "policy/engine.h"
#include "policy/params.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

using namespace tameflare;

const char* kGateway = R"({"name": "fuzz", "enforcement": "soft", "connectors": {
  "github": {"preset": "read_only", "rules": [{"action": "github.pr.merge", "decision": "require_approval"}]},
  "openai": {"preset": "allow_all"}, "anthropic": {"preset": "allow_all"},
  "stripe": {"preset": "read_only"}, "slack": {"preset": "read_only"},
  "mcp": {"domains": ["mcp.example.com"], "rules": [{"action": "mcp.tools.*", "decision": "allow"}]},
  "webhook": {"domains": ["hooks.example.com"], "preset": "allow_all"},
  "http": {"domains": ["*.example.org"], "preset": "read_only"}},
  "policies": [
    {"name": "amount", "actions": ["stripe.*"], "when": {"field": "parameters.amount", "op": "gt", "value": 100}, "decision": "require_approval"},
    {"name": "base", "when": {"any": [{"field": "parameters.base", "op": "matches", "value": "^(main|release/.*)$"},
                                      {"field": "parameters.items.0.price", "op": "exists", "value": true}]}, "decision": "deny"}]})";

const policy::Gateway& gateway() {
    static const auto config = [] {
        auto result = policy::load_config(fuzz::shipped_connectors(), {{"fuzz.json", kGateway}});
        if (!result.ok()) {
            std::fputs(policy::format_errors(result.errors).c_str(), stderr);
            std::abort();
        }
        return result.config;
    }();
    return *config->gateway("fuzz");
}

std::string_view next_line(std::string_view& input) {
    const auto newline = input.find('\n');
    const std::string_view line = input.substr(0, newline);
    input = newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
    return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    policy::Request request;
    request.method = next_line(input);
    request.host = next_line(input);
    request.target = next_line(input);
    request.content_type = next_line(input);
    request.body_complete = input.empty() || input.front() != '~';
    request.body = input;
    for (const bool all : {false, true}) {
        policy::EvalContext context;
        context.agent = "fuzz";
        context.all_parameters = all;
        const auto evaluation = policy::evaluate(gateway(), request, context);
        if (evaluation.connector && evaluation.actions.empty()) std::abort();
        for (const auto& action : evaluation.actions) {
            if (!action.type.starts_with(action.provider + ".")) std::abort();
            if (action.type.find_first_of("*?{}/ ") != std::string::npos) std::abort();
            (void)policy::dump_lossy(action.parameters);
        }
        if (evaluation.decision.trace.empty()) std::abort();
    }
    return 0;
}
