#include "daemon/log.h"

#include <cstdio>
#include <mutex>
#include <string>

namespace tameflare::daemon {

void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
    // "<N>" prefixes are what systemd reads as the priority of a stderr line.
    std::string line = "<" + std::to_string(static_cast<int>(level)) + ">" + std::string(message);
    for (const auto& [key, value] : fields) {
        line += ' ';
        line += key;
        line += '=';
        const bool quote = value.empty() || value.find_first_of(" \"=") != std::string_view::npos;
        if (quote) line += '"';
        for (const char c : value) {
            if (c == '"' || c == '\\') line += '\\';
            line += (c == '\n') ? ' ' : c;
        }
        if (quote) line += '"';
    }
    line += '\n';
    static std::mutex mutex;
    const std::lock_guard lock(mutex);
    std::fputs(line.c_str(), stderr);
}

}  // namespace tameflare::daemon
