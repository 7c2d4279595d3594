// tf: the TameFlare for Linux command-line tool.
#include "cli/commands.h"

#include <cstdio>
#include <cstring>
#include <span>

namespace {

constexpr const char* kUsage = R"(Usage: tf COMMAND ...

Commands that manage the running tameflared (over its API socket):
  status                             version, uptime, enforcement, kill switch, counters
  gateways [list|show NAME|set-enforcement NAME monitor|soft|full]
                                     the loaded gateways; change one's enforcement level
  reload                             read the configuration again (refused if invalid)
  agents [list|show ID|stop ID]      the agents it runs or enforces
  approvals [list|show ID|approve ID|deny ID|watch]
                                     requests held for a human, and answering them
  kill-switch [show|on|off] [--scope all|gateway:NAME|connector:NAME] [--reason T]
                                     refuse all traffic in a scope at once
  logs [-f] [--last N] [FILTERS] [--format table|csv|jsonl]
                                     the traffic log; -f follows new requests
  metrics                            the Prometheus metrics
  vault set NAME [--connector C]     store a credential read from standard input
  vault list | remove NAME | rotate  the vault's names (never values), removal, key rotation
  traffic query|export [FILTERS]     the traffic log as a table, CSV or JSON Lines
  audit query|export [FILTERS]       the audit log
  audit verify                       check the audit log's hash chain and signed checkpoints
  policy check                       validate the configuration tameflared would load
  policy test --gateway G 'METHOD URL' [--body B]
                                     decide one request and show the trace
  policy test --gateway G --requests FILE
                                     decide every request in FILE (a table)

Commands on agents and files:
  run --gateway G [--name N] [--isolation netns|cgroup] -- COMMAND [ARGS...]
                                     launch COMMAND as an agent under the gateway's policy
  enforce --gateway G --cgroup PATH|--unit NAME
                                     put an existing cgroup (a service) under the gateway's policy
  doctor --gateway G                 check that kernel enforcement works here (any user)
  connectors list                    the loaded connectors
  connectors show NAME               a connector's domains, routes and actions

Every command that asks tameflared takes --socket PATH and -c/--config FILE (to
find the socket). vault, traffic and audit with --state-dir DIR work on the
daemon's files instead (when it is stopped); policy check and test with
-c FILE, --connectors-dir DIR or --gateways-dir DIR work on those files.
`tf COMMAND --help` shows a command's options.
)";

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? tameflare::cli::kExitUsage : tameflare::cli::kExitOk;
    }
    if (std::strcmp(argv[1], "--version") == 0) {
        std::printf("tf %s\n", TF_VERSION);
        return 0;
    }
    const std::span<char*> rest(argv + 1, static_cast<std::size_t>(argc - 1));
    if (std::strcmp(argv[1], "run") == 0) return tameflare::cli::run_command(rest);
    if (std::strcmp(argv[1], "enforce") == 0) return tameflare::cli::enforce_command(rest);
    if (std::strcmp(argv[1], "doctor") == 0) return tameflare::cli::doctor_command(rest);
    if (std::strcmp(argv[1], "policy") == 0) return tameflare::cli::policy_command(rest);
    if (std::strcmp(argv[1], "connectors") == 0) return tameflare::cli::connectors_command(rest);
    if (std::strcmp(argv[1], "vault") == 0) return tameflare::cli::vault_command(rest);
    if (std::strcmp(argv[1], "audit") == 0) return tameflare::cli::audit_command(rest);
    if (std::strcmp(argv[1], "traffic") == 0) return tameflare::cli::traffic_command(rest);
    if (std::strcmp(argv[1], "status") == 0) return tameflare::cli::status_command(rest);
    if (std::strcmp(argv[1], "gateways") == 0) return tameflare::cli::gateways_command(rest);
    if (std::strcmp(argv[1], "reload") == 0) return tameflare::cli::reload_command(rest);
    if (std::strcmp(argv[1], "agents") == 0) return tameflare::cli::agents_command(rest);
    if (std::strcmp(argv[1], "approvals") == 0) return tameflare::cli::approvals_command(rest);
    if (std::strcmp(argv[1], "kill-switch") == 0) return tameflare::cli::kill_switch_command(rest);
    if (std::strcmp(argv[1], "logs") == 0) return tameflare::cli::logs_command(rest);
    if (std::strcmp(argv[1], "metrics") == 0) return tameflare::cli::metrics_command(rest);
    std::fprintf(stderr, "tf: unknown command \"%s\"\n\n%s", argv[1], kUsage);
    return tameflare::cli::kExitUsage;
}
