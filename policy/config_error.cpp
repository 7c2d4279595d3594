#include "policy/config_error.h"

namespace tameflare::policy {

std::string ConfigError::to_string() const {
    std::string out = file.empty() ? "<config>" : file;
    if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
    out += ": ";
    if (!pointer.empty()) out += pointer + ": ";
    out += message;
    if (!hint.empty()) out += " (hint: " + hint + ")";
    return out;
}

std::string format_errors(const ConfigErrors& errors) {
    std::string out;
    for (const auto& error : errors) {
        out += error.to_string();
        out += '\n';
    }
    return out;
}

}  // namespace tameflare::policy
