// The conversation between `tf run` and tameflared on the launch socket (a
// unix SOCK_SEQPACKET socket, one JSON object per message):
//
//   tf run -> daemon  {"type":"launch","gateway":G,"name":N,"isolation":"netns"|"cgroup",
//                      "argv":[...],"env":["K=V",...]}  + fds: stdin, stdout, stderr, cwd
//   daemon -> tf run  {"type":"started","agent":ID,"pid":P}  or  {"type":"error","message":M,"hint":H}
//   tf run -> daemon  {"type":"signal","signal":N}          (forwarded SIGINT, SIGTERM, SIGHUP, ...)
//   daemon -> tf run  {"type":"exited","status":S}          (exit code, or 128 + signal)
//
// Who asks is the kernel's word (common/caller.h: peer_credentials), never
// the message's. tf run going away ends the agent.
#pragma once

#include "common/unique_fd.h"

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::netns {

inline constexpr std::size_t kMaxLaunchMessage = std::size_t{256} * 1024;  // argv and environment together
inline constexpr std::size_t kMaxLaunchFds = 4;

struct Message {
    std::string text;           // JSON
    std::vector<UniqueFd> fds;  // passed with it (SCM_RIGHTS)
};

// Sends one message with `fds` attached. Throws std::system_error.
void send_message(int socket, const std::string& text, const std::vector<int>& fds = {});
// Receives one message; nullopt when the peer closed; throws std::system_error
// on errors and std::runtime_error for a truncated message or too many fds.
// A non-blocking socket with nothing to read throws with EAGAIN.
std::optional<Message> receive_message(int socket);

}  // namespace tameflare::netns
