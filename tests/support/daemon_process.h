// A real tameflared for tests, its stderr appended to a file (a busy daemon
// logs a line per request; a pipe nobody drains would stall it).
#pragma once

#include "tests/support/subprocess.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::testing {

inline std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// Polls `path` until it contains `needle`; false after `timeout`.
inline bool wait_for_text(const std::filesystem::path& path, const std::string& needle,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (slurp(path).find(needle) != std::string::npos) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

class DaemonProcess {
public:
    // `environment`: "NAME=value" entries added to the daemon's environment.
    DaemonProcess(const std::string& binary, const std::filesystem::path& config, std::filesystem::path log,
                  const std::vector<std::string>& environment = {})
        : log_(std::move(log)), process_(command(binary, config, log_, environment)) {}

    bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout = std::chrono::seconds(20)) const {
        return wait_for_text(log_, needle, timeout);
    }
    [[nodiscard]] std::string log() const { return slurp(log_); }
    // A "KEY=value" field of the last line that has it ("" when none).
    [[nodiscard]] std::string field(const std::string& key) const {
        const auto text = log();
        const auto at = text.rfind(key + "=");
        if (at == std::string::npos) return {};
        const auto start = at + key.size() + 1;
        return text.substr(start, text.find_first_of(" \n", start) - start);
    }
    std::string explicit_listen() const { return field("EXPLICIT_LISTEN"); }
    Subprocess& process() { return process_; }

private:
    static std::vector<std::string> command(const std::string& binary, const std::filesystem::path& config,
                                            const std::filesystem::path& log,
                                            const std::vector<std::string>& environment) {
        std::vector<std::string> argv{"/usr/bin/env"};
        argv.insert(argv.end(), environment.begin(), environment.end());
        argv.insert(argv.end(),
                    {"/bin/sh", "-c", R"(exec "$0" -c "$1" 2>>"$2")", binary, config.string(), log.string()});
        return argv;
    }

    std::filesystem::path log_;
    Subprocess process_;
};

}  // namespace tameflare::testing
