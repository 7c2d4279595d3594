// tf status, gateways, reload, agents, approvals, kill-switch, logs, metrics:
// the commands that manage the running tameflared, as clients of its REST
// socket (docs/api.md). Whatever they do, curl --unix-socket can do; the
// daemon authorizes every call by the caller's kernel credentials, so tf
// holds no privilege of its own.
#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/commands.h"
#include "cli/control_options.h"
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
namespace tameflare::cli {

namespace {

using namespace control;

// ---------------------------------------------------------------------------
// Usage

constexpr const char* kStatusUsage = R"(Usage: tf status [--json]

The running tameflared at a glance: version and uptime, kernel or explicit
enforcement, how many gateways, agents and pending approvals, the kill switch,
the proxy's counters, and the role the daemon gives you. Any user in the
socket's group may ask (role viewer).

  --json               print the API's JSON document
)";

constexpr const char* kGatewaysUsage = R"(Usage: tf gateways [list] [-q]
       tf gateways show NAME
       tf gateways set-enforcement NAME monitor|soft|full

list (the default)     every gateway with its enforcement level, connectors,
                       policies, rate limit and approval timeout; -q: names only
show NAME              one gateway: connectors with their domains, credential
                       and rules, policies, TCP destinations, who may launch
set-enforcement NAME LEVEL
                       full: decisions are enforced; soft: approvals are held,
                       denials are logged as would_deny and forwarded;
                       monitor: everything is forwarded and the decision only
                       logged; default: the gateway file's level again. Role
                       admin. Kept across reloads and restarts until set back
                       to default.

  --json               print the API's JSON document
  -q, --quiet          list: one name a line
)";

constexpr const char* kReloadUsage = R"(Usage: tf reload [--json]

Makes tameflared read its configuration, connectors and gateways again (as
SIGHUP does). An invalid configuration is refused and every error printed; the
running one stays. Role admin.

  --json               print the API's JSON document
)";

constexpr const char* kAgentsUsage = R"(Usage: tf agents [list] [-q]
       tf agents show ID
       tf agents stop ID

list (the default)     the agents tameflared runs (tf run) or enforces (tf enforce):
                       yours, or all of them with role viewer; -q: ids only
show ID                one agent: gateway, isolation, process, user, cgroup
stop ID                ends an agent (its whole cgroup); your own, or any with role admin

  --json               print the API's JSON document
  -q, --quiet          list: one id a line
)";

constexpr const char* kKillSwitchUsage = R"(Usage: tf kill-switch [show]
       tf kill-switch on|off [--scope all|gateway:NAME|connector:NAME] [--reason TEXT]

The kill switch refuses every request in its scope at once, whatever the
policy says, until it is turned off. It survives a restart of tameflared.

show (the default)     whether it is on, for what, why and who turned it on
on, off                turn it on or off for a scope (default all; off for all
                       lifts every scope); role owner

  --scope S            all, gateway:NAME or connector:NAME
  --reason TEXT        recorded in the audit log and shown by show
  --json               print the API's JSON document
)";

constexpr const char* kMetricsUsage = R"(Usage: tf metrics

tameflared's metrics in the Prometheus text format, as GET /metrics serves them
(role viewer): requests by gateway, agent, connector, decision and action type,
denials, approvals, latency histograms, connections, the kill switch, pending
approvals, connector errors, rate-limit hits, agents.
)";

// ---------------------------------------------------------------------------
// Kill switch

std::string kill_switch_text(const KillSwitchView& kill) {
    if (!kill.active) return paint("off", Colour::green);
    std::string scope;
    if (kill.all) {
        scope = "all traffic";
    } else {
        if (const auto gateways = joined(kill.gateways); !gateways.empty()) scope += "gateways " + gateways;
        if (const auto connectors = joined(kill.connectors); !connectors.empty()) {
            scope += std::string(scope.empty() ? "" : "; ") + "connectors " + connectors;
        }
    }
    std::string out = paint("ON", Colour::red) + " for " + printable(scope);
    if (!kill.reason.empty()) out += ": " + printable(kill.reason);
    if (!kill.actor.empty()) out += " (by " + printable(kill.actor) + ")";
    return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// The commands

int status_command(std::span<char*> args) {
    const Command command{"tf status", kStatusUsage, {kJson}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        const auto document = json_of(client.get("/v1/status"));
        if (options.json) {
            print_json(document);
            return kExitOk;
        }
        const auto status = status_from_json(document);
        std::printf("%s %s, up %s (since %s)\n", paint("tameflared", Colour::bold).c_str(),
                    printable(status.version).c_str(), duration(status.uptime_seconds).c_str(),
                    printable(status.started).c_str());
        const auto& enforcement = status.enforcement;
        field("enforcement", enforcement == "kernel" ? "kernel (BPF)" : enforcement + " (proxy variables only)",
              enforcement == "kernel" ? Colour::green : Colour::yellow);
        field("gateways", std::to_string(status.gateways));
        field("agents", std::to_string(status.agents));
        const auto pending = status.pending_approvals;
        field("pending approvals", std::to_string(pending), pending > 0 ? Colour::yellow : Colour::none);
        std::printf("  %-20s %s\n", "kill switch", kill_switch_text(status.kill_switch).c_str());
        const auto& counters = status.counters;
        field("connections", std::to_string(counters.connections_open) + " open, " +
                                 std::to_string(counters.connections_total) + " since start");
        field("requests",
              std::to_string(counters.requests) + " decided, " + std::to_string(counters.held) + " held now");
        field("you", "uid " + std::to_string(status.caller.uid) + ", role " + status.caller.role);
        return kExitOk;
    });
}

namespace {

// tf gateways list: one row per gateway.
void print_gateways(const std::vector<GatewaySummary>& gateways) {
    Table table({{"NAME", 0},
                 {"ENFORCEMENT"},
                 {"CONNECTORS"},
                 {"POLICIES", 8},
                 {"RATE LIMIT", 12},
                 {"APPROVAL TIMEOUT", 16},
                 {"DESCRIPTION", 60}});
    for (const auto& gateway : gateways) {
        const auto& limit = gateway.rate_limit;
        table.add(
            {{gateway.name},
             {gateway.enforcement, level_colour(gateway.enforcement)},
             {joined(gateway.connectors)},
             {std::to_string(gateway.policies)},
             {limit.requests > 0 ? std::to_string(limit.requests) + "/" + duration(limit.window_seconds) : "none"},
             {duration(gateway.approval_timeout_seconds)},
             {gateway.description}});
    }
    table.print();
}

// tf gateways show: the gateway, its connectors, policies and tcp rules.
void print_gateway(const GatewayDetail& detail) {
    const auto& gateway = detail.summary;
    std::printf("%s %s\n", paint("gateway", Colour::bold).c_str(), printable(gateway.name).c_str());
    if (!gateway.description.empty()) std::printf("  %s\n", printable(gateway.description).c_str());
    field("enforcement", gateway.enforcement, level_colour(gateway.enforcement));
    const auto& limit = gateway.rate_limit;
    field("rate limit", limit.requests > 0
                            ? std::to_string(limit.requests) + " requests per " + duration(limit.window_seconds)
                            : "none");
    field("approval timeout", duration(gateway.approval_timeout_seconds));
    field("defined in", gateway.origin);
    const auto users = joined(detail.launch.users);
    const auto groups = joined(detail.launch.groups);
    if (!users.empty() || !groups.empty()) {
        field("may launch", "users: " + (users.empty() ? "-" : users) + "; groups: " + (groups.empty() ? "-" : groups));
    }
    std::printf("%s\n", paint("connectors", Colour::bold).c_str());
    for (const auto& connector : detail.connectors) {
        if (!connector.described) {
            std::printf("  %s\n", printable(connector.name).c_str());
            continue;
        }
        std::printf("  %s (%s)\n", printable(connector.name).c_str(), printable(connector.type).c_str());
        field("  domains", joined(connector.domains));
        field("  credential", connector.credential);
        field("  preset", connector.preset);
        for (const auto& rule : connector.rules) {
            field("  rule", rule.pattern + " -> " + rule.effect,
                  rule.effect == "deny"    ? Colour::red
                  : rule.effect == "allow" ? Colour::green
                                           : Colour::yellow);
        }
    }
    if (!detail.policies.empty()) {
        std::printf("%s\n", paint("policies", Colour::bold).c_str());
        for (const auto& policy : detail.policies) {
            std::printf("  %s: %s %s\n", printable(policy.name).c_str(), printable(policy.effect).c_str(),
                        printable(joined(policy.actions)).c_str());
            if (!policy.reason.empty()) field("  reason", policy.reason);
        }
    }
    if (!detail.tcp.empty()) {
        std::printf("%s\n", paint("tcp", Colour::bold).c_str());
        for (const auto& destination : detail.tcp) {
            std::printf("  %s port %s\n",
                        printable(destination.host.empty() ? destination.cidr : destination.host).c_str(),
                        std::to_string(destination.port).c_str());
        }
    }
}

}  // namespace

int gateways_command(std::span<char*> args) {
    const Command command{"tf gateways", kGatewaysUsage, {kJson, kQuiet}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "list");
    if (const auto exit = only_with(command, options.quiet, "--quiet", action == "list", "list")) return *exit;
    int status = kExitOk;
    if (action == "list") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/gateways"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto gateways = gateways_from_json(document);
            if (options.quiet) {
                for (const auto& gateway : gateways) std::puts(printable(gateway.name).c_str());
                return kExitOk;
            }
            print_gateways(gateways);
            return kExitOk;
        });
    }
    if (action == "show") {
        const auto name = operand(command, options, 1, "a gateway name", status);
        if (!name) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/gateways/" + url_encode(*name)));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            print_gateway(gateway_detail_from_json(document));
            return kExitOk;
        });
    }
    if (action == "set-enforcement") {
        if (options.words.size() != 3) {
            return usage_error(command,
                               "set-enforcement needs a gateway name and a level (monitor, soft, full or default)");
        }
        const auto& name = options.words[1];
        const auto& level = options.words[2];
        if (level != "monitor" && level != "soft" && level != "full" && level != "default") {
            return usage_error(command,
                               "\"" + level + "\" is not an enforcement level: give monitor, soft, full or default");
        }
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document =
                json_of(client.put("/v1/gateways/" + url_encode(name) + "/enforcement", json{{"level", level}}));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto set = gateway_summary_from_json(document).enforcement;
            const auto now = set.empty() ? level : set;
            std::printf("gateway %s: enforcement %s\n", printable(name).c_str(),
                        paint(printable(now), level_colour(now)).c_str());
            return kExitOk;
        });
    }
    return usage_error(command, "unknown sub-command \"" + action + "\": give list, show or set-enforcement");
}

int reload_command(std::span<char*> args) {
    const Command command{"tf reload", kReloadUsage, {kJson}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        const auto response = client.post("/v1/reload");
        if (options.json && !response.json.is_null()) print_json(response.json);
        const auto result = reload_from_json(response.json);
        if (!response.ok()) {
            print_api_error(response);
            // Every error, with its file and place: from the refusal, or else
            // from a check of the same files.
            auto errors = result.errors.value_or(std::vector<ConfigErrorView>{});
            if (!result.errors && response.error_code() == "config_invalid") {
                errors = config_check_from_json(client.post("/v1/config/check").json).errors;
            }
            for (const auto& error : errors) {
                std::string where = error.file;
                if (!error.pointer.empty()) where += " " + error.pointer;
                std::fprintf(stderr, "  %s: %s\n", printable(where).c_str(), printable(error.message).c_str());
                if (!error.hint.empty()) std::fprintf(stderr, "    hint: %s\n", printable(error.hint).c_str());
            }
            return kExitFailed;
        }
        if (!options.json) std::printf("reloaded: %s\n", printable(result.summary).c_str());
        return kExitOk;
    });
}

int agents_command(std::span<char*> args) {
    const Command command{"tf agents", kAgentsUsage, {kJson, kQuiet}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "list");
    if (const auto exit = only_with(command, options.quiet, "--quiet", action == "list", "list")) return *exit;
    int status = kExitOk;
    if (action == "list") {
        if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
        return with_client(command, options, [&](const ApiClient& client) {
            const auto document = json_of(client.get("/v1/agents"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            const auto agents = agents_from_json(document);
            if (options.quiet) {
                for (const auto& agent : agents) std::puts(printable(agent.id).c_str());
                return kExitOk;
            }
            if (agents.empty()) {
                std::puts("no agents");
                return kExitOk;
            }
            Table table({{"ID", 0}, {"GATEWAY"}, {"ISOLATION"}, {"PID", 10}, {"UID", 10}, {"KIND", 10}});
            for (const auto& agent : agents) {
                table.add({{agent.id},
                           {agent.gateway},
                           {agent.isolation},
                           {std::to_string(agent.pid)},
                           {std::to_string(agent.uid)},
                           {agent.enforced_unit ? "enforced" : "launched"}});
            }
            table.print();
            return kExitOk;
        });
    }
    if (action == "show" || action == "stop") {
        const auto id = operand(command, options, 1, "an agent id", status);
        if (!id) return status;
        return with_client(command, options, [&](const ApiClient& client) {
            const auto target = "/v1/agents/" + url_encode(*id);
            const auto document = json_of(action == "show" ? client.get(target) : client.post(target + "/stop"));
            if (options.json) {
                print_json(document);
                return kExitOk;
            }
            if (action == "stop") {
                std::printf("agent %s stopped\n", printable(*id).c_str());
                return kExitOk;
            }
            const auto agent = agent_from_json(document);
            std::printf("%s %s\n", paint("agent", Colour::bold).c_str(), printable(agent.id).c_str());
            field("gateway", agent.gateway);
            field("isolation", agent.isolation);
            field("pid", std::to_string(agent.pid));
            field("uid", std::to_string(agent.uid));
            if (agent.run_uid) field("runs as uid", std::to_string(*agent.run_uid));
            field("cgroup id", std::to_string(agent.cgroup_id));
            field("kind", agent.enforced_unit ? "an existing cgroup under enforcement (tf enforce)"
                                              : "launched by tameflared (tf run)");
            return kExitOk;
        });
    }
    return usage_error(command, "unknown sub-command \"" + action + "\": give list, show or stop");
}

int kill_switch_command(std::span<char*> args) {
    const Command command{"tf kill-switch", kKillSwitchUsage, {kJson, kScope, kReason}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    const auto action = verb(options, "show");
    if (options.words.size() > 1) return usage_error(command, "unexpected argument \"" + options.words[1] + "\"");
    if (action != "show" && action != "on" && action != "off") {
        return usage_error(command, "unknown sub-command \"" + action + "\": give show, on or off");
    }
    const bool change = action != "show";
    if (const auto exit = only_with(command, options.scope.has_value(), "--scope", change, "on or off")) return *exit;
    if (const auto exit = only_with(command, options.reason.has_value(), "--reason", change, "on or off")) return *exit;
    const std::string scope = options.scope.value_or("all");
    const auto colon = scope.find(':');
    const auto kind = scope.substr(0, colon);
    const bool valid_scope = scope == "all" || ((kind == "gateway" || kind == "connector") &&
                                                colon != std::string::npos && colon + 1 < scope.size());
    if (!valid_scope) {
        return usage_error(command,
                           "--scope \"" + scope + "\" is not a scope: give all, gateway:NAME or connector:NAME");
    }
    return with_client(command, options, [&](const ApiClient& client) {
        json body{{"active", action == "on"}, {"scope", scope}};
        if (options.reason) body["reason"] = *options.reason;
        const auto kill = json_of(change ? client.put("/v1/kill-switch", body) : client.get("/v1/kill-switch"));
        if (options.json) {
            print_json(kill);
        } else {
            std::printf("kill switch %s\n", kill_switch_text(kill_switch_from_json(kill)).c_str());
        }
        return kExitOk;
    });
}

int metrics_command(std::span<char*> args) {
    const Command command{"tf metrics", kMetricsUsage, {}};
    Options options;
    if (const auto exit = parse(args, command, options)) return *exit;
    if (!options.words.empty()) return usage_error(command, "unexpected argument \"" + options.words[0] + "\"");
    return with_client(command, options, [&](const ApiClient& client) {
        RawOutput out;
        require_ok(client.stream("/metrics", [&out](std::string_view piece) {
            out.write(piece);
            return true;
        }));
        return kExitOk;
    });
}

}  // namespace tameflare::cli
