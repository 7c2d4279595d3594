// tf run: launch a command as an agent of a gateway, through tameflared's
// launch socket, with this terminal's stdin, stdout and stderr, and wait for
// it. Signals tf run receives are passed on; tf run's exit status is the
// agent's.
#include "cli/commands.h"
#include "cli/launch_client.h"
#include "common/unique_fd.h"
#include "netns/launch_protocol.h"

#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <variant>
#include <vector>

extern char** environ;

namespace tameflare::cli {
namespace {

constexpr const char* kRunUsage =
    R"(Usage: tf run --gateway G [--name N] [--isolation netns|cgroup] -- COMMAND [ARGS...]

Launches COMMAND as an agent of gateway G: tameflared starts it in its own
cgroup, PID namespace and Landlock domain (and, with netns isolation, the
default, its own network namespace), as you (when root runs it: as the
gateway's run_as user, by default a uid of its own), in this directory, with your environment minus the gateway's secret
variables and this terminal's stdin, stdout and stderr. Every TCP connection
it opens goes through the gateway's policy; other traffic is refused.

Options:
  --gateway G        the gateway whose policy applies (required)
  --name N           the agent's name (default: G-<random>); lower-case, digits, - and _
  --isolation MODE   netns (own network namespace, only loopback) or cgroup
                     (the host's namespace, the same BPF enforcement)
  --socket PATH      tameflared's launch socket (default: from the configuration,
                     /run/tameflare/launch.sock)
  -c, --config FILE  tameflared's configuration, to find the socket

Exit status: the agent's (128 + N when a signal N ended it); 125 when the
agent could not be launched; 2 for a usage error.
)";

constexpr int kExitLaunchFailed = 125;

int fail(const std::string& message, const std::string& hint = "") {
    return launch_failed("run", message, hint);
}

}  // namespace

int run_command(std::span<char*> args) {
    return run_command(args, {});
}

namespace {

// Reads the options; the launch request, or the exit code when there is nothing to launch.
std::variant<nlohmann::json, int> parse_run(std::span<char*> args, std::string& socket_path, std::string& config_file) {
    std::string gateway;
    std::string name;
    std::string isolation;
    enum { kGateway = 256, kName, kIsolation, kSocket };
    const option options[] = {
        {"gateway", required_argument, nullptr, kGateway},
        {"name", required_argument, nullptr, kName},
        {"isolation", required_argument, nullptr, kIsolation},
        {"socket", required_argument, nullptr, kSocket},
        {"config", required_argument, nullptr, 'c'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    optind = 1;
    int c = 0;
    const int argc = static_cast<int>(args.size());
    // "+": stop at the first non-option, so the command's own options stay its own.
    while ((c = getopt_long(argc, args.data(), "+c:h", options, nullptr)) != -1) {
        switch (c) {
            case kGateway: gateway = optarg; break;
            case kName: name = optarg; break;
            case kIsolation: isolation = optarg; break;
            case kSocket: socket_path = optarg; break;
            case 'c': config_file = optarg; break;
            case 'h': std::fputs(kRunUsage, stdout); return kExitOk;
            default: std::fputs(kRunUsage, stderr); return kExitUsage;
        }
    }
    if (gateway.empty() || optind >= argc) {
        std::fputs(gateway.empty() ? "tf run: --gateway is required\n" : "tf run: no command given\n", stderr);
        std::fputs(kRunUsage, stderr);
        return kExitUsage;
    }
    nlohmann::json request{{"type", "launch"}, {"gateway", gateway}};
    if (!name.empty()) request["name"] = name;
    if (!isolation.empty()) request["isolation"] = isolation;
    auto& argv = request["argv"] = nlohmann::json::array();
    for (int i = optind; i < argc; ++i) argv.push_back(args[static_cast<std::size_t>(i)]);
    auto& env = request["env"] = nlohmann::json::array();
    for (char** variable = environ; *variable != nullptr; ++variable) env.push_back(*variable);
    return request;
}

// Sends the launch request, then passes signals to the agent and prints the
// daemon's notes until the agent exits; its exit code.
int converse(int socket, const nlohmann::json& request, int cwd,
             const std::function<void(const nlohmann::json&)>& on_started) {
    // Signals are taken through a signalfd from here on and passed to the agent.
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (const int number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) {
        sigaddset(&forwarded, number);
    }
    sigprocmask(SIG_BLOCK, &forwarded, nullptr);
    const UniqueFd signals(::signalfd(-1, &forwarded, SFD_CLOEXEC));

    std::string agent;
    netns::send_message(socket, request.dump(), {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, cwd});
    for (;;) {
        pollfd ready[2] = {{socket, POLLIN, 0}, {signals.get(), POLLIN, 0}};
        if (::poll(ready, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return fail(std::string("poll: ") + std::strerror(errno));
        }
        if ((ready[1].revents & POLLIN) != 0) {
            signalfd_siginfo info{};
            if (::read(signals.get(), &info, sizeof info) == sizeof info && !agent.empty()) {
                netns::send_message(socket, nlohmann::json{{"type", "signal"}, {"signal", info.ssi_signo}}.dump());
            }
        }
        if ((ready[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const auto message = netns::receive_message(socket);
        if (!message) {
            return fail(agent.empty() ? "tameflared closed the connection"
                                      : "tameflared went away; agent " + agent +
                                            " stays under enforcement (its network is refused) until it restarts");
        }
        const auto reply = nlohmann::json::parse(message->text, nullptr, false);
        const std::string type = reply.is_object() ? reply.value("type", "") : "";
        if (type == "started") {
            agent = reply.value("agent", "");
            if (const auto notes = reply.find("notes"); notes != reply.end() && notes->is_array()) {
                for (const auto& note : *notes) {
                    if (note.is_string()) std::fprintf(stderr, "tf run: %s\n", note.get<std::string>().c_str());
                }
            }
            if (on_started) on_started(reply);
        } else if (type == "note") {
            std::fprintf(stderr, "tf run: %s\n", reply.value("message", "").c_str());
        } else if (type == "exited") {
            return reply.value("status", kExitLaunchFailed);
        } else if (type == "error") {
            return fail(reply.value("message", "launch refused"), reply.value("hint", ""));
        }
    }
}

}  // namespace

int run_command(std::span<char*> args, const std::function<void(const nlohmann::json&)>& on_started) {
    std::string socket_path;
    std::string config_file;
    const auto parsed = parse_run(args, socket_path, config_file);
    if (const int* code = std::get_if<int>(&parsed)) return *code;
    const auto socket = connect_launch_socket(launch_socket_path(socket_path, config_file), "run");
    if (!socket) return kExitLaunchFailed;
    const UniqueFd cwd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cwd) return fail(std::string("cannot open the current directory: ") + std::strerror(errno));
    try {
        return converse(socket->get(), std::get<nlohmann::json>(parsed), cwd.get(), on_started);
    } catch (const std::exception& error) {
        return fail(error.what());
    }
}

}  // namespace tameflare::cli
