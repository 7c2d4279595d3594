// tf status, gateways, reload, agents, approvals, kill-switch, logs, metrics:
// the commands that manage the running tameflared, as clients of its REST
// socket (docs/api.md). Whatever they do, curl --unix-socket can do; the
// daemon authorizes every call by the caller's kernel credentials, so tf
// holds no privilege of its own.
#include "cli/control_options.h"
#include "cli/api_client.h"

#include "cli/commands.h"
#include "cli/daemon_call.h"
#include "cli/output.h"
#include "common/unique_fd.h"
#include "daemon/store/query.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>
namespace tameflare::cli::control {

namespace {

constexpr const char* kConnectionHelp = R"(Reaching tameflared:
  --socket PATH        its API socket (default: $TAMEFLARE_API_SOCKET, else api.socket
                       in its configuration, else /run/tameflare/api.sock)
  -c, --config FILE    its configuration, to find the socket
                       (default /etc/tameflare/tameflared.json)
  -h, --help           this text

Exit status: 0 done, 1 the daemon refused or failed the operation, 2 usage
error, 3 tameflared cannot be reached (not running, or no permission on the
socket; logs -f and approvals watch: only when it is not there at the start).
)";

constexpr std::array kAllOptions = {
    option{"socket", required_argument, nullptr, kSocket}, option{"config", required_argument, nullptr, kConfig},
    option{"json", no_argument, nullptr, kJson},           option{"quiet", no_argument, nullptr, kQuiet},
    option{"note", required_argument, nullptr, kNote},     option{"scope", required_argument, nullptr, kScope},
    option{"reason", required_argument, nullptr, kReason}, option{"follow", no_argument, nullptr, kFollow},
    option{"last", required_argument, nullptr, kLast},     option{"gateway", required_argument, nullptr, kGateway},
    option{"agent", required_argument, nullptr, kAgent},   option{"connector", required_argument, nullptr, kConnector},
    option{"action", required_argument, nullptr, kAction}, option{"decision", required_argument, nullptr, kDecision},
    option{"since", required_argument, nullptr, kSince},   option{"until", required_argument, nullptr, kUntil},
    option{"format", required_argument, nullptr, kFormat}, option{"help", no_argument, nullptr, kHelp},
};

}  // namespace

void print_usage(const Command& command, std::FILE* to) {
    std::fputs(command.usage, to);
    std::fputc('\n', to);
    std::fputs(kConnectionHelp, to);
}

int usage_error(const Command& command, const std::string& message) {
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for the options.\n", command.name.c_str(), message.c_str(),
                 command.name.c_str());
    return kExitUsage;
}

std::string option_name(int id) {
    for (const auto& entry : kAllOptions) {
        if (entry.val == id) return std::string("--") + entry.name;
    }
    return id > 0 && id < 256 ? std::string("-") + static_cast<char>(id) : "an option";
}

bool takes(const Command& command, int id) {
    return id == kSocket || id == kConfig || id == kHelp ||
           std::find(command.options.begin(), command.options.end(), id) != command.options.end();
}

// Fills `options` from `args` (args[0] is the command's word); options may
// come before or after the operands. nullopt to go on, or the exit status
// (after --help or a usage error).
std::optional<int> parse(std::span<char*> args, const Command& command, Options& options) {
    std::vector<option> table;
    std::string shorts = ":";  // ':' first: a missing value is reported as such
    for (const auto& entry : kAllOptions) {
        if (!takes(command, entry.val)) continue;
        table.push_back(entry);
        if (entry.val < 256) {
            shorts += static_cast<char>(entry.val);
            if (entry.has_arg == required_argument) shorts += ':';
        }
    }
    table.push_back(option{nullptr, 0, nullptr, 0});

    optind = 0;  // a full reset of getopt's state
    opterr = 0;
    const int argc = static_cast<int>(args.size());
    int c = 0;
    while ((c = getopt_long(argc, args.data(), shorts.c_str(), table.data(), nullptr)) != -1) {
        const std::string value = optarg != nullptr ? optarg : "";
        switch (c) {
            case kSocket: options.socket = value; break;
            case kConfig: options.config = value; break;
            case kJson: options.json = true; break;
            case kQuiet: options.quiet = true; break;
            case kFollow: options.follow = true; break;
            case kNote: options.note = value; break;
            case kScope: options.scope = value; break;
            case kReason: options.reason = value; break;
            case kLast: {
                const bool number =
                    !value.empty() && value.size() <= 9 && value.find_first_not_of("0123456789") == std::string::npos;
                if (!number) {
                    return usage_error(
                        command, "--last \"" + value + "\" is not a number of rows: give a whole number (0: all)");
                }
                options.last = static_cast<std::size_t>(std::stoul(value));
                break;
            }
            case kSince:
            case kUntil:
            case kGateway:
            case kAgent:
            case kConnector:
            case kAction:
            case kDecision:
                if (auto refused = set_filter_flag(options.filter, LogKind::traffic, option_name(c).substr(2), value)) {
                    return usage_error(command, *refused);
                }
                break;
            case kFormat:
                if (value != "table" && value != "csv" && value != "jsonl") {
                    return usage_error(command, "--format \"" + value + "\" is not a format: give table, csv or jsonl");
                }
                options.format = value;
                break;
            case kHelp: print_usage(command, stdout); return kExitOk;
            case ':': return usage_error(command, option_name(optopt) + " needs a value");
            default: {
                const std::string given = optopt != 0 && optopt < 256 ? std::string("-") + static_cast<char>(optopt)
                                                                      : std::string(args[optind - 1]);
                return usage_error(command, "\"" + given + "\" is not an option of " + command.name);
            }
        }
    }
    for (int i = optind; i < argc; ++i) options.words.emplace_back(args[static_cast<std::size_t>(i)]);
    return std::nullopt;
}

// ---------------------------------------------------------------------------
// Colours

Colour risk_colour(const std::string& risk) {
    if (risk == "high" || risk == "critical") return Colour::red;
    if (risk == "medium") return Colour::yellow;
    return Colour::none;
}

Colour level_colour(const std::string& level) {
    if (level == "full") return Colour::green;
    if (level == "soft") return Colour::yellow;
    if (level == "monitor") return Colour::red;
    return Colour::none;
}

// ---------------------------------------------------------------------------
// Talking to the daemon

int with_client(const Command& command, const Options& options, const std::function<int(const ApiClient&)>& body) {
    return run_with_daemon(DaemonCall{command.name, options.socket, options.config, options.json, ""}, body);
}

// The operand after the verb, or a usage error.
std::optional<std::string> operand(const Command& command, const Options& options, std::size_t index, const char* what,
                                   int& status) {
    if (options.words.size() <= index) {
        status = usage_error(command, options.words[0] + " needs " + what);
        return std::nullopt;
    }
    if (options.words.size() > index + 1) {
        status = usage_error(command, "unexpected argument \"" + options.words[index + 1] + "\"");
        return std::nullopt;
    }
    return options.words[index];
}

// The verb; `fallback` when none was given.
std::string verb(Options& options, const char* fallback) {
    if (options.words.empty()) options.words.emplace_back(fallback);
    return options.words[0];
}

// Refuses options given to a verb that has no use for them.
std::optional<int> only_with(const Command& command, bool given, const char* option, bool allowed, const char* verbs) {
    if (given && !allowed) return usage_error(command, std::string(option) + " goes with " + verbs);
    return std::nullopt;
}

}  // namespace tameflare::cli::control
