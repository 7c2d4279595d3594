#include "cli/commands.h"
#include "daemon/daemon_config.h"

#include <cstdio>

namespace tameflare::cli {

std::optional<StateLocation> state_location(const std::string& state_dir, const std::string& config_file) {
    daemon::DaemonConfig config;
    if (!config_file.empty() || state_dir.empty()) {
        policy::ConfigErrors errors;
        const auto loaded = daemon::load_daemon_config(config_file.empty() ? daemon::kDefaultConfigFile : config_file,
                                                       !config_file.empty(), errors);
        if (!loaded) {
            std::fputs(policy::format_errors(errors).c_str(), stderr);
            return std::nullopt;
        }
        config = *loaded;
    }
    if (!state_dir.empty()) {
        config.state_dir = state_dir;
        config.store = daemon::StoreConfig{};
    }
    return StateLocation{config.state_dir, config.database_path(), config.vault_key_path(), config.audit_key_path()};
}

std::string state_dir_hint(const std::string& command, const std::string& config_file) {
    policy::ConfigErrors ignored;
    const auto config = daemon::load_daemon_config(config_file.empty() ? daemon::kDefaultConfigFile : config_file,
                                                   !config_file.empty(), ignored);
    const auto state_dir = config ? config->state_dir : daemon::DaemonConfig{}.state_dir;
    return "when tameflared is stopped, " + command + " --state-dir " + state_dir.string() +
           " works on its files directly (as root or tameflared's user)";
}

}  // namespace tameflare::cli
