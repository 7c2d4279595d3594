#include "cli/launch_client.h"

#include "daemon/daemon_config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tameflare::cli {

std::string launch_socket_path(const std::string& given, const std::string& config_file) {
    if (!given.empty()) return given;
    if (const char* env = std::getenv("TAMEFLARE_LAUNCH_SOCKET"); env != nullptr && *env != '\0') return env;
    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(config_file.empty() ? daemon::kDefaultConfigFile : config_file,
                                                   !config_file.empty(), errors);
    if (!config) return (daemon::DaemonConfig{}.runtime_dir / "launch.sock").string();
    return config->agents.launch_socket.empty() ? (config->runtime_dir / "launch.sock").string()
                                                : config->agents.launch_socket.string();
}

int launch_failed(const char* command, const std::string& message, const std::string& hint) {
    std::fprintf(stderr, "tf %s: %s\n", command, message.c_str());
    if (!hint.empty()) std::fprintf(stderr, "  hint: %s\n", hint.c_str());
    return 125;
}

std::optional<UniqueFd> connect_launch_socket(const std::string& path, const char* command) {
    UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof address.sun_path) {
        launch_failed(command, "launch socket path too long: " + path);
        return std::nullopt;
    }
    std::memcpy(address.sun_path, path.c_str(), path.size());
    if (!socket || ::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        // Inside an agent the sandbox refuses every socket of tameflared's.
        if (errno == EPERM && std::getenv("TAMEFLARE_AGENT") != nullptr) {
            launch_failed(command, "agents cannot launch agents: the sandbox refuses tameflared's launch socket",
                          "run tf " + std::string(command) + " outside any agent");
            return std::nullopt;
        }
        launch_failed(command, "cannot reach tameflared at " + path + ": " + std::strerror(errno),
                      "is tameflared running (systemctl status tameflared)? Is kernel enforcement available (the "
                      "journal says)?");
        return std::nullopt;
    }
    return socket;
}

}  // namespace tameflare::cli
