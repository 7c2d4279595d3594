// tf policy check | test: against the running tameflared's own configuration
// (POST /v1/config/check, POST /v1/policy/test) unless files are given
// (-c FILE, --connectors-dir DIR, --gateways-dir DIR), then on those files
// directly. tf connectors list | show work on the files.
#include "cli/commands.h"

#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/daemon_call.h"
#include "cli/output.h"
#include "common/atomic_file.h"
#include "daemon/daemon_config.h"
#include "policy/classify.h"
#include "policy/engine.h"
#include "policy/explain.h"
#include "policy/params.h"
#include "policy/suggest.h"

#include <getopt.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace tameflare::cli {

namespace {

using nlohmann::json;
using CommonOptions = daemon::ConfigLocation;

// The agent the daemon's policy test decides as (for rate limits and
// conditions on the agent); the local test's default, so both agree.
constexpr const char* kTestAgent = "policy-test";

struct TestOptions {
    std::string socket;
    std::string gateway;
    std::string agent = kTestAgent;
    bool agent_given = false;
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
    kSocket,
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
    {"socket", required_argument, nullptr, kSocket},
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

constexpr const char* kFilesHelp = R"(
Which configuration: without files, the running tameflared's (over its API
socket: what it loaded, with enforcement levels set at run time and the kill
switch). With any of these, the files directly (tameflared need not run):
  -c, --config FILE    the daemon's configuration (/etc/tameflare/tameflared.json)
  --connectors-dir DIR connector definitions (repeatable; replace the configured ones)
  --gateways-dir DIR   gateway files (replaces the configured directory)
  --socket PATH        the API socket (default: $TAMEFLARE_API_SOCKET, else api.socket
                       in /etc/tameflare/tameflared.json, else /run/tameflare/api.sock)
)";

constexpr const char* kTestUsage = R"(Usage: tf policy test --gateway G [OPTIONS] 'METHOD URL'
       tf policy test --gateway G --requests FILE

Decides a request as the proxy would and prints the decision and its trace.

  --gateway G          the gateway to evaluate against (required)
  --agent A            with files: the agent id for rate limiting and conditions
                       (default "policy-test", as tameflared decides)
  --body B             request body; @FILE reads it from FILE
  --content-type T     body type (default: JSON if it looks like JSON, else form)
  --requests FILE      one request per line: METHOD URL [BODY]; '#' starts a comment
                       (through the daemon: one call per line)
  --json               print the evaluation as JSON
  --exit-code          exit 1 unless the request is forwarded
)";

constexpr const char* kTestExit = R"(
Exit status: 0 decided (with --exit-code: forwarded), 1 with --exit-code not
forwarded, or the daemon refused (an unknown gateway) or the files are invalid,
2 usage error, 3 tameflared cannot be reached (no files given).
)";

constexpr const char* kCheckUsage = R"(Usage: tf policy check [-c FILE] [--connectors-dir DIR] [--gateways-dir DIR]

Loads the connectors and gateways and prints a summary, or every error with its
file and JSON pointer. Through the daemon (no files given), tameflared checks
the files it would load on a reload (role admin).
)";

constexpr const char* kCheckExit = R"(
Exit status: 0 valid, 1 invalid or the daemon refused, 2 usage error,
3 tameflared cannot be reached (no files given).
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

// Files named on the command line: the local path.
bool files_given(const CommonOptions& common) {
    return common.explicit_file || !common.connector_dirs.empty() || !common.gateways_dir.empty();
}

// -c FILE, --connectors-dir DIR, --gateways-dir DIR into `common`; false
// for any other option.
bool take_file_option(int c, CommonOptions& common) {
    switch (c) {
        case kConfig:
            common.file = optarg;
            common.explicit_file = true;
            return true;
        case kConnectorsDir: common.connector_dirs.emplace_back(optarg); return true;
        case kGatewaysDir: common.gateways_dir = optarg; return true;
        default: return false;
    }
}

// Parses options shared by every sub-command plus the test ones; returns the
// index of the first positional argument, -2 after --help, or -1 after
// printing an error.
int parse(std::span<char*> args, CommonOptions& common, TestOptions& test, const std::string& usage) {
    optind = 1;
    int c = 0;
    const int argc = static_cast<int>(args.size());
    while ((c = getopt_long(argc, args.data(), "c:", kOptions, nullptr)) != -1) {
        if (take_file_option(c, common)) continue;
        switch (c) {
            case kSocket: test.socket = optarg; break;
            case kGateway: test.gateway = optarg; break;
            case kAgent:
                test.agent = optarg;
                test.agent_given = true;
                break;
            case kBody: test.body = optarg; break;
            case kContentType: test.content_type = optarg; break;
            case kRequests: test.requests_file = optarg; break;
            case kJson: test.json = true; break;
            case kExitCode: test.exit_code = true; break;
            case kHelp: std::fputs(usage.c_str(), stdout); return -2;
            default: std::fputs(usage.c_str(), stderr); return -1;
        }
    }
    if (!test.socket.empty() && files_given(common)) {
        std::fputs("tf: --socket asks the running daemon, -c/--connectors-dir/--gateways-dir name files; give one\n",
                   stderr);
        return -1;
    }
    return optind;
}

// ---------------------------------------------------------------------------
// Deciding, either way: a decision is the JSON of policy::to_json (the
// daemon's answer to POST /v1/policy/test is that too).

struct Line {
    std::string method;
    std::string url;
    std::string body;
};

std::optional<Line> parse_line(const std::string& text) {
    std::istringstream in(text);
    Line line;
    if (!(in >> line.method >> line.url)) return std::nullopt;
    std::transform(line.method.begin(), line.method.end(), line.method.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    std::getline(in, line.body);
    const auto start = line.body.find_first_not_of(' ');
    line.body = start == std::string::npos ? "" : line.body.substr(start);
    return line;
}

// One request decided; `content_type` "" to guess from the body.
using Decide = std::function<json(const Line& request, const std::string& content_type)>;

Decide local_decider(const policy::Gateway& gateway, const TestOptions& options) {
    return [&gateway, &options](const Line& line, const std::string& content_type) {
        // policy::Request holds views: everything it points at lives here.
        const auto url = policy::parse_url(line.url);
        const std::string type = content_type.empty() ? policy::guess_content_type(line.body) : content_type;
        policy::Request request;
        request.method = line.method;
        request.host = url->host;
        request.target = url->target;
        request.body = line.body;
        request.content_type = type;
        policy::EvalContext context;
        context.agent = options.agent;
        context.all_parameters = true;
        return policy::to_json(gateway, policy::evaluate(gateway, request, context));
    };
}

Decide daemon_decider(const ApiClient& client, const TestOptions& options) {
    return [&client, &options](const Line& line, const std::string& content_type) {
        json test{{"gateway", options.gateway}, {"method", line.method}, {"url", line.url}, {"body", line.body}};
        if (!content_type.empty()) test["content_type"] = content_type;
        return json_of(client.post("/v1/policy/test", test));
    };
}

bool forwarded(const DecisionView& decision) {
    return decision.verdict == "forward";
}

void print_decision(const DecisionView& decision) {
    std::printf("decision:   %s (%s; %s)\n", printable(decision.decision).c_str(), printable(decision.effect).c_str(),
                printable(decision.verdict).c_str());
    std::printf("gateway:    %s (enforcement %s)\n", printable(decision.gateway).c_str(),
                printable(decision.enforcement).c_str());
    std::printf("connector:  %s\n", decision.connector.empty() ? "(none)" : printable(decision.connector).c_str());
    for (const auto& action : decision.actions) {
        std::printf("action:     %s  risk=%s access=%s\n", printable(action.action).c_str(),
                    printable(action.risk).c_str(), printable(action.access).c_str());
        std::printf("route:      %s\n", printable(action.route).c_str());
        std::printf("parameters: %s%s\n", printable(dump(action.parameters)).c_str(),
                    action.parameters_complete ? "" : " (incomplete)");
    }
    std::printf("reason:     %s\n", printable(decision.reason).c_str());
    if (decision.verdict == "hold") {
        std::printf("approval:   held for a human, %lld s until timeout (408)\n", decision.approval_timeout_seconds);
    }
    std::printf("trace:\n");
    for (const auto& step : decision.trace) {
        std::printf("  %-12s %s\n", printable(step.stage).c_str(), printable(step.detail).c_str());
    }
}

// --requests FILE: a table, one row per request.
int test_file(const TestOptions& options, const Decide& decide) {
    std::ifstream in(options.requests_file);
    if (!in) {
        std::fprintf(stderr, "tf: cannot read %s\n", options.requests_file.c_str());
        return kExitUsage;
    }
    std::vector<Line> lines;
    std::string raw;
    int number_of_line = 0;
    while (std::getline(in, raw)) {
        ++number_of_line;
        const auto start = raw.find_first_not_of(" \t");
        if (start == std::string::npos || raw[start] == '#') continue;
        const auto line = parse_line(raw);
        if (!line || !policy::parse_url(line->url)) {
            std::fprintf(stderr, "%s:%d: expected \"METHOD URL [BODY]\"\n", options.requests_file.c_str(),
                         number_of_line);
            return kExitUsage;
        }
        lines.push_back(*line);
    }
    std::printf("%-24s %-8s %-48s %-34s %s\n", "DECISION", "METHOD", "URL", "ACTION", "REASON");
    int not_forwarded = 0;
    for (const auto& line : lines) {
        const auto decision = decision_from_json(decide(line, ""));
        if (!forwarded(decision)) ++not_forwarded;
        // Every action of the request (one, but for a JSON-RPC batch).
        std::string action;
        for (const auto& each : decision.actions) action += (action.empty() ? "" : ",") + each.action;
        const std::string shown_url = line.url.size() > 48 ? line.url.substr(0, 45) + "..." : line.url;
        std::printf("%-24s %-8s %-48s %-34s %s\n", printable(decision.decision).c_str(), printable(line.method).c_str(),
                    printable(shown_url).c_str(), action.empty() ? "-" : printable(action).c_str(),
                    printable(decision.reason).c_str());
        std::fflush(stdout);
    }
    return options.exit_code && not_forwarded > 0 ? kExitFailed : kExitOk;
}

// One request from the command line: the decision and its trace, or --json.
int test_one(const TestOptions& options, const Line& line, const std::string& body, const Decide& decide) {
    const auto document = decide(Line{line.method, line.url, body}, options.content_type);
    const auto decision = decision_from_json(document);
    if (options.json) {
        print_json(document);
    } else {
        print_decision(decision);
    }
    return options.exit_code && !forwarded(decision) ? kExitFailed : kExitOk;
}

std::string daemon_hint(const std::string& command) {
    return std::string("to use files without the daemon, name them: ") + command + " -c " + daemon::kDefaultConfigFile;
}

int test_command(std::span<char*> args) {
    CommonOptions common;
    TestOptions options;
    const std::string usage = std::string(kTestUsage) + kFilesHelp + kTestExit;
    const int first = parse(args, common, options, usage);
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    const auto positional = args.subspan(static_cast<std::size_t>(first));
    if (options.gateway.empty() || (options.requests_file.empty() == positional.empty()) || positional.size() > 1) {
        std::fputs("tf policy test: give --gateway and either one 'METHOD URL' or --requests FILE\n\n", stderr);
        std::fputs(kTestUsage, stderr);
        return kExitUsage;
    }
    const bool local = files_given(common);
    if (options.agent_given && !local) {
        std::fprintf(stderr,
                     "tf policy test: --agent goes with files (-c FILE): tameflared's policy test decides as agent "
                     "\"%s\"\n",
                     kTestAgent);
        return kExitUsage;
    }
    std::optional<Line> line;
    std::string body = options.body;
    if (options.requests_file.empty()) {
        line = parse_line(positional[0]);
        if (!line || !policy::parse_url(line->url) || !line->body.empty()) {
            std::fprintf(
                stderr,
                "tf policy test: expected 'METHOD URL', e.g. 'PUT https://api.github.com/repos/o/r/pulls/7/merge'\n");
            return kExitUsage;
        }
        if (body.starts_with("@")) {
            std::ifstream in(body.substr(1), std::ios::binary);
            if (!in) {
                std::fprintf(stderr, "tf: cannot read body file %s\n", body.c_str() + 1);
                return kExitUsage;
            }
            body.assign(std::istreambuf_iterator<char>(in), {});
        }
    }
    const auto run = [&](const Decide& decide) {
        return line ? test_one(options, *line, body, decide) : test_file(options, decide);
    };

    if (!local) {
        return run_with_daemon(DaemonCall{"tf policy test", options.socket, "", options.json,
                                          daemon_hint("tf policy test --gateway " + options.gateway)},
                               [&](const ApiClient& client) { return run(daemon_decider(client, options)); });
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
    return run(local_decider(*gateway, options));
}

int check_command(std::span<char*> args) {
    CommonOptions common;
    TestOptions options;
    const std::string usage = std::string(kCheckUsage) + kFilesHelp + kCheckExit;
    const int first = parse(args, common, options, usage);
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    if (static_cast<std::size_t>(first) < args.size()) {
        std::fprintf(stderr, "tf policy check: unexpected argument \"%s\"\n\n%s", args[static_cast<std::size_t>(first)],
                     usage.c_str());
        return kExitUsage;
    }
    if (!files_given(common)) {
        return run_with_daemon(
            DaemonCall{"tf policy check", options.socket, "", false, daemon_hint("tf policy check")},
            [](const ApiClient& client) {
                const auto result = config_check_from_json(json_of(client.post("/v1/config/check")));
                policy::ConfigErrors errors;
                for (const auto& error : result.errors) {
                    errors.push_back(policy::ConfigError{error.file, error.pointer, 0, 0, error.message, error.hint});
                }
                if (!result.valid || !errors.empty()) {
                    for (const auto& error : errors) std::fprintf(stderr, "%s\n", printable(error.to_string()).c_str());
                    std::fprintf(stderr, "configuration invalid: %zu error(s)\n", errors.size());
                    return kExitFailed;
                }
                std::puts("configuration OK: the files tameflared loads on a reload (checked by tameflared)");
                return kExitOk;
            });
    }
    const auto config = load(common);
    if (!config) return kExitFailed;
    std::printf("configuration OK: %zu connectors, %zu gateways\n", config->connectors.size(), config->gateways.size());
    return kExitOk;
}

// ---------------------------------------------------------------------------
// tf policy suggest: a gateway drafted from its traffic (policy/suggest.h).

constexpr const char* kSuggestUsage = R"(Usage: tf policy suggest --gateway G [--since AGE|TIME] [--agent A]
                         [--output FILE [--force]] [-c FILE] [--connectors-dir DIR]
                         [--gateways-dir DIR] [--socket PATH]

Drafts a gateway file from the traffic log of gateway G (best recorded with
G at enforcement monitor, which lets everything through and records it):
each connector instance with the actions seen as rules (allow, or
require_approval where a human was asked), an instance of the shipped
connector (or of http) for hosts no connector of G served, tcp rules for
raw destinations, and a comment with counts on each. Everything else of G's
file is kept; enforcement becomes full. Applied, it allows what was seen and
nothing more. The traffic comes from tameflared (role viewer); the
connectors and G's file from the configuration files.

  --gateway G       the gateway (required)
  --since AGE|TIME  the traffic since then (default 24h; an age such as 90m,
                    or RFC 3339)
  --agent A         only agent A's traffic
  --output FILE     write the draft to FILE (atomically, mode 0644); an
                    existing FILE is kept unless --force. Default: stdout
  -c FILE, --connectors-dir DIR, --gateways-dir DIR
                    the configuration to read (default /etc/tameflare/tameflared.json)
  --socket PATH     tameflared's API socket

Exit status: 0 drafted, 1 nothing recorded for G, the daemon refused, or the
files are invalid, 2 usage error, 3 tameflared cannot be reached.
)";

struct SuggestArgs {
    std::string gateway;
    std::string since = "24h";
    std::string agent;
    std::string output;
    bool force = false;
    std::string socket;
};

int parse_suggest(std::span<char*> args, CommonOptions& common, SuggestArgs& options) {
    enum { kSince = 300, kOutput, kForce };
    const option options_table[] = {
        {"config", required_argument, nullptr, kConfig},
        {"connectors-dir", required_argument, nullptr, kConnectorsDir},
        {"gateways-dir", required_argument, nullptr, kGatewaysDir},
        {"socket", required_argument, nullptr, kSocket},
        {"gateway", required_argument, nullptr, kGateway},
        {"agent", required_argument, nullptr, kAgent},
        {"since", required_argument, nullptr, kSince},
        {"output", required_argument, nullptr, kOutput},
        {"force", no_argument, nullptr, kForce},
        {"help", no_argument, nullptr, kHelp},
        {nullptr, 0, nullptr, 0},
    };
    optind = 1;
    int c = 0;
    while ((c = getopt_long(static_cast<int>(args.size()), args.data(), "c:", options_table, nullptr)) != -1) {
        if (take_file_option(c, common)) continue;
        switch (c) {
            case kSocket: options.socket = optarg; break;
            case kGateway: options.gateway = optarg; break;
            case kAgent: options.agent = optarg; break;
            case kSince: options.since = optarg; break;
            case kOutput: options.output = optarg; break;
            case kForce: options.force = true; break;
            case kHelp: std::fputs(kSuggestUsage, stdout); return -2;
            default: std::fputs(kSuggestUsage, stderr); return -1;
        }
    }
    const char* problem = nullptr;
    if (optind != static_cast<int>(args.size())) problem = "unexpected argument";
    if (options.gateway.empty()) problem = "--gateway G is required";
    if (options.force && options.output.empty()) problem = "--force goes with --output FILE";
    if (problem != nullptr) {
        std::fprintf(stderr, "tf policy suggest: %s\n\n%s", problem, kSuggestUsage);
        return -1;
    }
    return optind;
}

// The gateway's own file as JSON; null when it has none or it is not one.
nlohmann::json gateway_file(const policy::Gateway& gateway) {
    std::ifstream in(gateway.origin);
    if (!in) return nullptr;
    return nlohmann::json::parse(in, nullptr, false, true);
}

// The draft, atomically: FILE.tmp then renamed over FILE (kept unless `force`).
int write_draft(const std::string& path, const std::string& text, bool force) {
    try {
        write_file_atomically(path, text, {.mode = 0644, .replace = force});
    } catch (const FileExists&) {
        std::fprintf(stderr, "tf policy suggest: %s exists; give --force to replace it, or another --output FILE\n",
                     printable(path).c_str());
        return kExitFailed;
    } catch (const FileError& error) {
        std::fprintf(stderr, "tf policy suggest: %s%s%s\n", printable(error.what()).c_str(),
                     error.hint().empty() ? "" : "; ", error.hint().c_str());
        return kExitFailed;
    }
    return kExitOk;
}

int suggest_command(std::span<char*> args) {
    CommonOptions common;
    SuggestArgs options;
    const int first = parse_suggest(args, common, options);
    if (first == -2) return kExitOk;
    if (first < 0) return kExitUsage;
    const auto now = store::Clock::now();
    store::LogFilter filter;
    filter.since = store::parse_time(options.since, now);
    if (!filter.since) {
        std::fprintf(stderr, "tf policy suggest: --since %s is neither an age (24h, 90m) nor an RFC 3339 time\n",
                     printable(options.since).c_str());
        return kExitUsage;
    }
    filter.gateway = options.gateway;
    filter.agent = options.agent;
    const auto config = load(common);
    if (!config) return kExitFailed;
    const policy::Gateway* gateway = config->gateway(options.gateway);
    if (gateway == nullptr) {
        std::fprintf(stderr, "tf policy suggest: the configuration has no gateway %s\n",
                     printable(options.gateway).c_str());
        return kExitFailed;
    }
    return run_with_daemon(
        DaemonCall{"tf policy suggest", options.socket, common.explicit_file ? common.file.string() : "", false,
                   "tf policy suggest reads the traffic from tameflared: start it (systemctl start tameflared)"},
        [&](const ApiClient& client) {
            const auto rows = traffic_documents(json_of(client.get(log_target(LogKind::traffic, filter, "json"))));
            std::vector<policy::Observation> seen;
            for (const auto& document : rows) {
                const auto row = traffic_row_from_json(document);
                seen.push_back({row.connector, row.action, row.method, row.host, row.path, row.decision});
            }
            if (seen.empty()) {
                std::fprintf(stderr,
                             "tf policy suggest: gateway %s recorded no traffic since %s%s; run its agents with "
                             "enforcement monitor first (tf gateways set-enforcement %s monitor)\n",
                             printable(options.gateway).c_str(), printable(options.since).c_str(),
                             options.agent.empty() ? "" : (" for agent " + printable(options.agent)).c_str(),
                             printable(options.gateway).c_str());
                return kExitFailed;
            }
            const std::string source = std::to_string(seen.size()) + " traffic records of gateway " + options.gateway +
                                       (options.agent.empty() ? "" : ", agent " + options.agent) + ", since " +
                                       store::format_time(*filter.since);
            const auto draft = policy::suggest_gateway(*config, gateway_file(*gateway), seen,
                                                       policy::SuggestOptions{options.gateway, source});
            const std::string text = draft.dump(2) + "\n";
            if (options.output.empty()) {
                std::fputs(text.c_str(), stdout);
                return kExitOk;
            }
            const int status = write_draft(options.output, text, options.force);
            if (status == kExitOk) {
                std::fprintf(stderr, "tf policy suggest: wrote %s from %zu records; check it with tf policy check\n",
                             printable(options.output).c_str(), seen.size());
            }
            return status;
        });
}

}  // namespace

int policy_command(std::span<char*> args) {
    const std::string sub = args.size() > 1 ? args[1] : "";
    if (sub == "check") return check_command(args.subspan(1));
    if (sub == "test") return test_command(args.subspan(1));
    if (sub == "suggest") return suggest_command(args.subspan(1));
    std::fputs("Usage: tf policy check|test|suggest [OPTIONS]\n", stderr);
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
    if (first >= 0 && !unused.socket.empty()) {
        std::fputs("tf connectors: reads the files (-c FILE, --connectors-dir DIR); --socket does not apply\n", stderr);
        return kExitUsage;
    }
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
