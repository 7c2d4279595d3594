// The shipped connectors, loaded once per fuzzing process.
#pragma once

#include "daemon/daemon_config.h"

#include <cstdio>
#include <cstdlib>

namespace tameflare::fuzz {

inline const std::vector<policy::Document>& shipped_connectors() {
    static const auto docs = [] {
        daemon::DaemonConfig config;
        config.connector_dirs = {std::string(TF_SOURCE_DIR) + "/connectors"};
        config.gateways_dir = "/nonexistent";
        policy::ConfigErrors errors;
        auto files = daemon::read_policy_files(config, errors);
        if (!errors.empty() || files.connectors.empty()) {
            std::fputs(policy::format_errors(errors).c_str(), stderr);
            std::abort();
        }
        return files.connectors;
    }();
    return docs;
}

}  // namespace tameflare::fuzz
