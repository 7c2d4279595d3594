// The tf command's sub-commands. Each returns the process exit status.
#pragma once

#include <span>
#include <string>

namespace tameflare::cli {

// Exit statuses: 0 success, 1 the thing checked failed (invalid config, a
// request that is not allowed with --exit-code), 2 usage or I/O error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

int policy_command(std::span<char*> args);
int connectors_command(std::span<char*> args);

}  // namespace tameflare::cli
