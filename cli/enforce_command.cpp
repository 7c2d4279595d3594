// tf enforce: put an existing cgroup (a CI runner's systemd unit, say) under
// a gateway, with the same BPF enforcement as agents tf run launches, or
// release it.
#include "cli/commands.h"
#include "cli/launch_client.h"
#include "netns/cgroup.h"
#include "netns/launch_protocol.h"

#include <getopt.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace tameflare::cli {
namespace {

// Whether a process of `cgroup` has SSL_CERT_FILE in its environment: the
// sign of the drop-in's CA lines. Run as the unit's ExecStartPre=, tf itself
// is such a process and has the unit's environment.
bool trusts_interception(const std::filesystem::path& cgroup) {
    std::ifstream procs(cgroup / "cgroup.procs");
    for (long pid = 0; procs >> pid;) {
        std::ifstream environ("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
        const std::string variables{std::istreambuf_iterator<char>(environ), {}};
        if (variables.starts_with("SSL_CERT_FILE=") ||
            variables.find(std::string("\0SSL_CERT_FILE=", 15)) != std::string::npos) {
            return true;
        }
    }
    return false;
}

constexpr const char* kEnforceUsage = R"(Usage: tf enforce --gateway G (--cgroup PATH | --unit NAME) [--name N]
       tf enforce --release (--cgroup PATH | --unit NAME)

Puts an existing cgroup under gateway G: from now on every TCP connection a
process in it opens goes through G's policy, UDP other than DNS is refused,
and DNS answers only G's names. Processes already in the cgroup are covered
for their new sockets. The choice survives restarts of tameflared (until the
cgroup goes away). Root only.

Options:
  --gateway G      the gateway whose policy applies
  --cgroup PATH    the cgroup directory (below the cgroup2 mount)
  --unit NAME      a systemd system unit: <cgroup2 mount>/system.slice/NAME
  --name N         the name its traffic is logged under (default unit-<cgroup id>)
  --release        take the cgroup out from under enforcement
  --socket PATH, -c FILE   as for tf run

In a unit, run it before the service starts (its cgroup exists by then):
  ExecStartPre=+/usr/bin/tf enforce --unit %n --gateway ci

Exit status: 0 done; 125 refused (the message says why); 2 usage.
)";

}  // namespace

int enforce_command(std::span<char*> args) {
    std::string gateway;
    std::string cgroup;
    std::string unit;
    std::string name;
    std::string socket_path;
    std::string config_file;
    bool release = false;
    enum { kGateway = 256, kCgroup, kUnit, kName, kRelease, kSocket };
    const option options[] = {
        {"gateway", required_argument, nullptr, kGateway},
        {"cgroup", required_argument, nullptr, kCgroup},
        {"unit", required_argument, nullptr, kUnit},
        {"name", required_argument, nullptr, kName},
        {"release", no_argument, nullptr, kRelease},
        {"socket", required_argument, nullptr, kSocket},
        {"config", required_argument, nullptr, 'c'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    optind = 1;
    int c = 0;
    while ((c = getopt_long(static_cast<int>(args.size()), args.data(), "c:h", options, nullptr)) != -1) {
        switch (c) {
            case kGateway: gateway = optarg; break;
            case kCgroup: cgroup = optarg; break;
            case kUnit: unit = optarg; break;
            case kName: name = optarg; break;
            case kRelease: release = true; break;
            case kSocket: socket_path = optarg; break;
            case 'c': config_file = optarg; break;
            case 'h': std::fputs(kEnforceUsage, stdout); return kExitOk;
            default: std::fputs(kEnforceUsage, stderr); return kExitUsage;
        }
    }
    if (cgroup.empty() == unit.empty() || (!release && gateway.empty()) || optind != static_cast<int>(args.size())) {
        std::fputs("tf enforce: give --cgroup or --unit (one of them), and --gateway unless --release\n", stderr);
        std::fputs(kEnforceUsage, stderr);
        return kExitUsage;
    }
    try {
        if (!unit.empty()) cgroup = (netns::cgroup2_mount() / "system.slice" / unit).string();
        nlohmann::json request{{"type", release ? "release" : "enforce"}, {"cgroup", cgroup}};
        if (!release) request["gateway"] = gateway;
        if (!name.empty()) request["name"] = name;
        const auto socket = connect_launch_socket(launch_socket_path(socket_path, config_file), "enforce");
        if (!socket) return 125;
        netns::send_message(socket->get(), request.dump());
        const auto message = netns::receive_message(socket->get());
        if (!message) return launch_failed("enforce", "tameflared closed the connection");
        const auto reply = nlohmann::json::parse(message->text, nullptr, false);
        const std::string type = reply.is_object() ? reply.value("type", "") : "";
        if (type == "error") return launch_failed("enforce", reply.value("message", ""), reply.value("hint", ""));
        if (type == "enforced") {
            std::printf("%s is under gateway %s as %s\n", cgroup.c_str(), gateway.c_str(),
                        reply.value("agent", "").c_str());
            if (!trusts_interception(cgroup)) {
                std::fputs(
                    "tf enforce: note: no process of the service has SSL_CERT_FILE: its HTTPS requests will not "
                    "trust the interception CA; give the unit the CA lines of the drop-in "
                    "(/usr/share/doc/tameflare/examples/tameflare-enforce.conf, docs/recipes.md)\n",
                    stderr);
            }
            return kExitOk;
        }
        if (type == "released") {
            std::printf("%s is no longer under enforcement\n", cgroup.c_str());
            return kExitOk;
        }
        return launch_failed("enforce", "unexpected answer from tameflared");
    } catch (const std::exception& error) {
        return launch_failed("enforce", error.what());
    }
}

}  // namespace tameflare::cli
