// Errors a user can make in configuration: what, where and how to fix it.
#pragma once

#include <string>
#include <vector>

namespace tameflare::policy {

struct ConfigError {
    std::string file;     // the file (or other source name) the error is in
    std::string pointer;  // RFC 6901 JSON pointer to the offending value ("" = whole file)
    int line = 0;         // 1-based, 0 when unknown (set for syntax errors)
    int column = 0;
    std::string message;  // what is wrong
    std::string hint;     // how to fix it, may be empty

    // "file:line:col: /pointer: message (hint: ...)"
    [[nodiscard]] std::string to_string() const;
};

using ConfigErrors = std::vector<ConfigError>;

std::string format_errors(const ConfigErrors& errors);

}  // namespace tameflare::policy
