// tf policy check | test, tf connectors list | show. These work on the
// configuration files directly; the daemon's copy is reached over D-Bus/REST
// once the control plane exists.
#include "cli/commands.h"

#include "daemon/daemon_config.h"
#include "policy/classify.h"
#include "policy/engine.h"
#include "policy/explain.h"
#include "policy/params.h"

#include <getopt.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace tameflare::cli {

namespace {

using CommonOptions = daemon::ConfigLocation;

struct TestOptions {
    std::string gateway;
    std::string agent = "cli";
    std::string body;
    std::string content_type;
    std::string requests_file;
    bool json = false;
    bool exit_code = false;
};

enum OptionId {
    kConfig = 'c',
    kConnectorsDir = 256,
    kGatewaysDir,
    kGateway,
    kAgent,
    kBody,
    kContentType,
    kRequests,
    kJson,
    kExitCode,
    kHelp
};

const option kOptions[] = {
    {"config", required_argument, nullptr, kConfig},
    {"connectors-dir", required_argument, nullptr, kConnectorsDir},
    {"gateways-dir", required_argument, nullptr, kGatewaysDir},
    {"gateway", required_argument, nullptr, kGateway},
    {"agent", required_argument, nullptr, kAgent},
    {"body", required_argument, nullptr, kBody},
    {"content-type", required_argument, nullptr, kContentType},
    {"requests", required_argument, nullptr, kRequests},
    {"json", no_argument, nullptr, kJson},
    {"exit-code", no_argument, nullptr, kExitCode},
    {"help", no_argument, nullptr, kHelp},
    {nullptr, 0, nullptr, 0},
};

constexpr const char* kTestUsage = R"(Usage: tf policy test --gateway G [OPTIONS] 'METHOD URL'
       tf policy test --gateway G --requests FILE

Decides a request as the proxy would and prints the decision and its trace.

  --gateway G          the gateway to evaluate against (required)
  --agent A            agent id for rate limiting and conditions (default "cli")
  --body B             request body; @FILE reads it from FILE
  --content-type T     body type (default: JSON if it looks like JSON, else form)
  --requests FILE      one request per line: METHOD URL [BODY]; '#' starts a comment
  --json               print the evaluation as JSON
  --exit-code          exit 1 unless the request is forwarded
  -c, --config FILE, --connectors-dir DIR, --gateways-dir DIR
)";

std::shared_ptr<const policy::Config> load(const CommonOptions& options) {
    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(options, errors);
    if (!config) {
        std::fputs(policy::format_errors(errors).c_str(), stderr);
        return nullptr;
    }
    auto result = daemon::load_policy(*config);
    if (!result.ok()) {
        std::fputs(policy::format_errors(result.errors).c_str(), stderr);
        std::fprintf(stderr, "configuration invalid: %zu error(s)\n", result.errors.size());
        return nullptr;
    }
    return result.config;
}

// Parses options shared by every sub-command plus the test ones; returns the
// index of the first positional argument, or -1 after printing an error.
int parse(std::span<char*> args, CommonOptions& common, TestOptions& test, const char* usage) {
    optind = 1;
    int c = 0;
    const int argc = static_cast<int>(args.size());
    while ((c = getopt_long(argc, args.data(), "c:", kOptions, nullptr)) != -1) {
        switch (c) {
            case kConfig:
                common.file = optarg;
                common.explicit_file = true;
                break;
            case kConnectorsDir: common.connector_dirs.emplace_back(optarg); break;
            case kGatewaysDir: common.gateways_dir = optarg; break;
            case kGateway: test.gateway = optarg; break;
            case kAgent: test.agent = optarg; break;
            case kBody: test.body = optarg; break;
            case kContentType: test.content_type = optarg; break;
            case kRequests: test.requests_file = optarg; break;
            case kJson: test.json = true; break;
            case kExitCode: test.exit_code = true; break;
            case kHelp: std::fputs(usage, stdout); return -2;
            default: std::fputs(usage, stderr); return -1;
        }
    }
    return optind;
}

void print_human(const policy::Gateway& gateway, const policy::Evaluation& evaluation) {
    const auto& decision = evaluation.decision;
    std::printf("decision:   %s (%s; %s)\n", std::string(policy::to_string(decision.label)).c_str(),
                std::string(policy::to_string(decision.effect)).c_str(),
                std::string(policy::to_string(decision.verdict)).c_str());
    std::printf("gateway:    %s (enforcement %s)\n", gateway.name.c_str(),
                std::string(policy::to_string(gateway.enforcement)).c_str());
    std::printf("connector:  %s\n", evaluation.connector ? evaluation.connector->name.c_str() : "(none)");
    for (const auto& action : evaluation.actions) {
        std::printf("action:     %s  risk=%s access=%s\n", action.type.c_str(),
                    std::string(policy::to_string(action.risk)).c_str(),
                    std::string(policy::to_string(action.access)).c_str());
        std::printf("route:      %s\n", action.route.c_str());
        std::printf("parameters: %s%s\n", policy::dump_lossy(action.parameters).c_str(),
                    action.parameters_complete ? "" : " (incomplete)");
    }
    std::printf("reason:     %s\n", decision.reason.c_str());
    if (decision.verdict == policy::Verdict::hold) {
        std::printf("approval:   held for a human, %lld s until timeout (408)\n",
                    static_cast<long long>(decision.approval_timeout.count()));
    }
    std::printf("trace:\n");
    for (const auto& step : decision.trace) std::printf("  %-12s %s\n", step.stage.c_str(), step.detail.c_str());
}

struct Line {
    std::string method;
    std::string url;
    std::string body;
};

std::optional<Line> parse_line(const std::string& text) {
    std::istringstream in(text);
    Line line;
    if (!(in >> line.method >> line.url)) return std::nullopt;
    std::getline(in, line.body);
    const auto start = line.body.find_first_not_of(' ');
    line.body = start == std::string::npos ? "" : line.body.substr(start);
    return line;
}

policy::Evaluation run_one(const policy::Gateway& gateway, const TestOptions& options, const std::string& method,
                           const policy::ParsedUrl& url, const std::string& body, const std::string& content_type) {
    policy::Request request;
    request.method = method;
    request.host = url.host;
    request.target = url.target;
    request.body = body;
    request.content_type = content_type;
    policy::EvalContext context;
    context.agent = options.agent;
    context.all_parameters = true;
    return policy::evaluate(gateway, request, context);
}

int test_file(const policy::Gateway& gateway, const TestOptions& options) {
    std::ifstream in(options.requests_file);
    if (!in) {
        std::fprintf(stderr, "tf: cannot read %s\n", options.requests_file.c_str());
        return kExitUsage;
    }
    std::printf("%-24s %-8s %-48s %-34s %s\n", "DECISION", "METHOD", "URL", "ACTION", "REASON");
    std::string text;
    int number = 0;
    int not_forwarded = 0;
    while (std::getline(in, text)) {
        ++number;
        if (text.find_first_not_of(" \t") == std::string::npos || text[text.find_first_not_of(" \t")] == '#') continue;
        const auto line = parse_line(text);
        const auto url = line ? policy::parse_url(line->url) : std::nullopt;
        if (!line || !url) {
            std::fprintf(stderr, "%s:%d: expected \"METHOD URL [BODY]\"\n", options.requests_file.c_str(), number);
            return kExitUsage;
        }
        const auto evaluation =
            run_one(gateway, options, line->method, *url, line->body, policy::guess_content_type(line->body));
        const auto& decision = evaluation.decision;
        if (decision.verdict != policy::Verdict::forward) ++not_forwarded;
        std::string action = evaluation.actions.empty() ? "-" : evaluation.actions[decision.deciding_action].type;
        std::string shown_url = line->url.size() > 48 ? line->url.substr(0, 45) + "..." : line->url;
        std::printf("%-24s %-8s %-48s %-34s %s\n", std::string(policy::to_string(decision.label)).c_str(),
                    line->method.c_str(), shown_url.c_str(), action.c_str(), decision.reason.c_str());
    }
    return options.exit_code && not_forwarded > 0 ? kExitFailed : kExitOk;
}

int test_command(std::span<char*> args) {
    CommonOptions common;
    TestOptions options;
    const int first = parse(args, common, options, kTestUsage);
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    const auto positional = args.subspan(static_cast<std::size_t>(first));
    if (options.gateway.empty() || (options.requests_file.empty() == positional.empty()) || positional.size() > 1) {
        std::fputs("tf policy test: give --gateway and either one 'METHOD URL' or --requests FILE\n\n", stderr);
        std::fputs(kTestUsage, stderr);
        return kExitUsage;
    }
    const auto config = load(common);
    if (!config) return kExitFailed;
    const policy::Gateway* gateway = config->gateway(options.gateway);
    if (!gateway) {
        std::string names;
        for (const auto& [name, unused] : config->gateways) names += (names.empty() ? "" : ", ") + name;
        std::fprintf(stderr, "tf: no gateway \"%s\" (configured: %s)\n", options.gateway.c_str(),
                     names.empty() ? "none" : names.c_str());
        return kExitUsage;
    }
    if (!options.requests_file.empty()) return test_file(*gateway, options);

    const auto line = parse_line(positional[0]);
    const auto url = line ? policy::parse_url(line->url) : std::nullopt;
    if (!line || !url || !line->body.empty()) {
        std::fprintf(
            stderr,
            "tf policy test: expected 'METHOD URL', e.g. 'PUT https://api.github.com/repos/o/r/pulls/7/merge'\n");
        return kExitUsage;
    }
    std::string body = options.body;
    if (body.starts_with("@")) {
        std::ifstream in(body.substr(1), std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "tf: cannot read body file %s\n", body.c_str() + 1);
            return kExitUsage;
        }
        body.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string content_type =
        options.content_type.empty() ? policy::guess_content_type(body) : options.content_type;
    const auto evaluation = run_one(*gateway, options, line->method, *url, body, content_type);
    if (options.json) {
        std::printf("%s\n", policy::dump_lossy(policy::to_json(*gateway, evaluation), 2).c_str());
    } else {
        print_human(*gateway, evaluation);
    }
    return options.exit_code && evaluation.decision.verdict != policy::Verdict::forward ? kExitFailed : kExitOk;
}

int check_command(std::span<char*> args) {
    CommonOptions common;
    TestOptions unused;
    const int first =
        parse(args, common, unused, "Usage: tf policy check [-c FILE] [--connectors-dir DIR] [--gateways-dir DIR]\n");
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    const auto config = load(common);
    if (!config) return kExitFailed;
    std::printf("configuration OK: %zu connectors, %zu gateways\n", config->connectors.size(), config->gateways.size());
    return kExitOk;
}

}  // namespace

int policy_command(std::span<char*> args) {
    const std::string sub = args.size() > 1 ? args[1] : "";
    if (sub == "check") return check_command(args.subspan(1));
    if (sub == "test") return test_command(args.subspan(1));
    std::fputs("Usage: tf policy check|test [OPTIONS]\n", stderr);
    return kExitUsage;
}

int connectors_command(std::span<char*> args) {
    const std::string sub = args.size() > 1 ? args[1] : "";
    if (sub != "list" && sub != "show") {
        std::fputs("Usage: tf connectors list | tf connectors show NAME [-c FILE] [--connectors-dir DIR]\n", stderr);
        return kExitUsage;
    }
    CommonOptions common;
    TestOptions unused;
    const auto sub_args = args.subspan(1);
    const int first =
        parse(sub_args, common, unused, "Usage: tf connectors list | show NAME [-c FILE] [--connectors-dir DIR]\n");
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    const auto config = load(common);
    if (!config) return kExitFailed;
    if (sub == "list") {
        for (const auto& [name, def] : config->connectors) {
            std::string domains;
            for (const auto& domain : def->domains) domains += (domains.empty() ? "" : ",") + domain;
            // static_actions() counts "<name>.unknown"; templated actions (http.{method}) are not listed.
            const std::size_t templated = static_cast<std::size_t>(
                std::count_if(def->routes.begin(), def->routes.end(),
                              [](const policy::Route& route) { return route.action.find('{') != std::string::npos; }));
            const bool rpc_templated = def->jsonrpc && def->jsonrpc->fallback.action.find('{') != std::string::npos;
            std::printf("%-12s %3zu routes %3zu actions%s  %s\n", name.c_str(), def->routes.size(),
                        def->static_actions().size() - 1, templated || rpc_templated ? " + templated" : "",
                        domains.empty() ? "(domains set per gateway)" : domains.c_str());
        }
        return kExitOk;
    }
    if (static_cast<std::size_t>(first) >= sub_args.size()) {
        std::fputs("tf connectors show: name a connector\n", stderr);
        return kExitUsage;
    }
    const auto it = config->connectors.find(sub_args[static_cast<std::size_t>(first)]);
    if (it == config->connectors.end()) {
        std::fprintf(stderr, "tf: no connector \"%s\"; `tf connectors list` shows them\n",
                     sub_args[static_cast<std::size_t>(first)]);
        return kExitUsage;
    }
    const auto& def = *it->second;
    std::printf("%s: %s\n", def.name.c_str(), def.description.c_str());
    for (const auto& route : def.routes) {
        std::string methods;
        for (const auto& method : route.methods) methods += (methods.empty() ? "" : ",") + method;
        std::printf("  %-10s %-58s %-40s %s\n", methods.empty() ? "*" : methods.c_str(), route.path.c_str(),
                    route.action.c_str(), std::string(policy::to_string(route.risk)).c_str());
        for (const auto& variant : route.variants) {
            std::printf("  %-10s   when %-52s %-40s\n", "",
                        (variant.field + (variant.test == policy::Variant::Test::equals    ? "=" + variant.value
                                          : variant.test == policy::Variant::Test::present ? " present"
                                                                                           : " absent"))
                            .c_str(),
                        variant.action.c_str());
        }
    }
    if (def.jsonrpc) {
        for (const auto& method : def.jsonrpc->methods) {
            std::printf("  jsonrpc    %-58s %-40s %s\n", method.method.c_str(), method.action.c_str(),
                        std::string(policy::to_string(method.risk)).c_str());
        }
        std::printf("  jsonrpc    %-58s %-40s\n", "(other)", def.jsonrpc->fallback.action.c_str());
    }
    return kExitOk;
}

}  // namespace tameflare::cli
