// Placeholder: replaced by the real commands.
#include "cli/commands.h"

#include <cstdio>

namespace tameflare::cli {

int vault_command(std::span<char*> /*args*/) {
    std::fputs("tf vault: not built yet\n", stderr);
    return kExitUsage;
}

}  // namespace tameflare::cli
