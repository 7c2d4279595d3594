// Placeholder: replaced by the real commands.
#include "cli/commands.h"

#include <cstdio>

namespace tameflare::cli {

int audit_command(std::span<char*> /*args*/) {
    std::fputs("tf audit: not built yet\n", stderr);
    return kExitUsage;
}

int traffic_command(std::span<char*> /*args*/) {
    std::fputs("tf traffic: not built yet\n", stderr);
    return kExitUsage;
}

}  // namespace tameflare::cli
