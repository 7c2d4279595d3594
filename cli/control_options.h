// What tf's control-plane commands share (tf status, gateways, reload,
// agents, approvals, kill-switch, logs, metrics): their options, one parser
// for them, usage errors, colours, and the call to the daemon.
#pragma once

#include "cli/api_client.h"
#include "cli/output.h"
#include "daemon/store/query.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdio>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tameflare::cli::control {

using nlohmann::json;

enum OptionId {
    kConfig = 'c',
    kFollow = 'f',
    kHelp = 'h',
    kQuiet = 'q',
    kSocket = 256,
    kJson,
    kNote,
    kScope,
    kReason,
    kLast,
    kGateway,
    kAgent,
    kConnector,
    kAction,
    kDecision,
    kSince,
    kUntil,
    kFormat,
};

struct Command {
    std::string name;  // "tf gateways"
    const char* usage;
    std::vector<int> options;  // besides --socket, -c and --help
};

struct Options {
    std::string socket;
    std::string config;
    bool json = false;
    bool quiet = false;
    bool follow = false;
    std::optional<std::string> note;
    std::optional<std::string> scope;
    std::optional<std::string> reason;
    std::optional<std::size_t> last;
    store::LogFilter filter;  // tf logs: --since, --until, --gateway, --agent, --connector, --action, --decision
    std::optional<std::string> format;
    std::vector<std::string> words;  // the operands: a verb and its arguments
};

// The usage text, then how to reach the daemon.
void print_usage(const Command& command, std::FILE* to);
// "<command>: <message>" and where to find the options; the usage exit status.
int usage_error(const Command& command, const std::string& message);
// Fills `options` from `args` (args[0] is the command's word); options may
// come before or after the operands. nullopt to go on, or the exit status
// (after --help or a usage error).
std::optional<int> parse(std::span<char*> args, const Command& command, Options& options);

Colour risk_colour(const std::string& risk);
Colour level_colour(const std::string& level);

// Runs `body` with a client of the daemon, or says why it cannot be reached.
int with_client(const Command& command, const Options& options, const std::function<int(const ApiClient&)>& body);
// The operand after the verb, or a usage error.
std::optional<std::string> operand(const Command& command, const Options& options, std::size_t index, const char* what,
                                   int& status);
// The verb; `fallback` when none was given.
std::string verb(Options& options, const char* fallback);
// Refuses options given to a verb that has no use for them.
std::optional<int> only_with(const Command& command, bool given, const char* option, bool allowed, const char* verbs);

}  // namespace tameflare::cli::control
