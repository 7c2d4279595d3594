// The tf command's sub-commands. Each returns the process exit status.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>

namespace tameflare::cli {

// Exit statuses: 0 success, 1 the thing checked failed (invalid config, a
// request that is not allowed with --exit-code), 2 usage or I/O error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
// The commands that ask the running daemon over its REST socket: tameflared
// cannot be reached (not running, or no permission on its socket).
inline constexpr int kExitUnreachable = 3;

int policy_command(std::span<char*> args);
int connectors_command(std::span<char*> args);
int vault_command(std::span<char*> args);
int audit_command(std::span<char*> args);
int traffic_command(std::span<char*> args);
int run_command(std::span<char*> args);
// tf run, telling `on_started` the daemon's "started" reply (the agent's id and its filesystem view).
int run_command(std::span<char*> args, const std::function<void(const nlohmann::json&)>& on_started);
int enforce_command(std::span<char*> args);
int doctor_command(std::span<char*> args);

// The control commands, over tameflared's REST socket (cli/control_commands.cpp).
int status_command(std::span<char*> args);
int gateways_command(std::span<char*> args);
int reload_command(std::span<char*> args);
int agents_command(std::span<char*> args);
int approvals_command(std::span<char*> args);
int kill_switch_command(std::span<char*> args);
int logs_command(std::span<char*> args);
int metrics_command(std::span<char*> args);

// The daemon's state files, as the store commands find them.
struct StateLocation {
    std::filesystem::path state_dir;
    std::filesystem::path database;
    std::filesystem::path vault_key;
    std::filesystem::path audit_key;
};

// From --state-dir DIR when given (files by their default names), else from
// the daemon configuration (`config_file`, default /etc/tameflare/tameflared.json).
// Prints why to stderr and returns nullopt when the configuration is invalid.
std::optional<StateLocation> state_location(const std::string& state_dir, const std::string& config_file);

// For a command that goes through the daemon unless given --state-dir: the
// hint when the daemon cannot be reached, "when tameflared is stopped,
// COMMAND --state-dir DIR works on its files directly ...", with the state
// directory of the configuration (`config_file`, "" for the default file).
std::string state_dir_hint(const std::string& command, const std::string& config_file);

}  // namespace tameflare::cli
