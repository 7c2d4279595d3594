// The client side of tameflared's launch socket, shared by tf run and tf enforce.
#pragma once

#include "common/unique_fd.h"

#include <optional>
#include <string>

namespace tameflare::cli {

// --socket, else $TAMEFLARE_LAUNCH_SOCKET, else the daemon configuration's
// agents.launch_socket (or <runtime_dir>/launch.sock).
std::string launch_socket_path(const std::string& given, const std::string& config_file);

// A connected SOCK_SEQPACKET socket; nullopt after printing why (prefixed
// with `command`) and what to do.
std::optional<UniqueFd> connect_launch_socket(const std::string& path, const char* command);

// Prints "tf <command>: <message>" and the hint; returns 125.
int launch_failed(const char* command, const std::string& message, const std::string& hint = "");

}  // namespace tameflare::cli
