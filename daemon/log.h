// Structured log lines. Issue-level plumbing: stderr now, the journal (with
// the same fields) once the daemon runs under systemd.
#pragma once

#include <initializer_list>
#include <string_view>
#include <utility>

namespace tameflare::daemon {

enum class LogLevel { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

using LogField = std::pair<std::string_view, std::string_view>;

// One line: "<level> message KEY=value ..."; values with spaces are quoted.
void log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});

}  // namespace tameflare::daemon
