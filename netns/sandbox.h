// The layers of an agent's sandbox on this kernel: which pass, which are
// replaced by a documented fallback, and which the kernel cannot give, so
// that a launch is refused rather than run with weaker isolation than said.
// Pure logic over what was detected; `tf doctor` shows the same table.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::netns {

// What the kernel (and the BPF programs it accepted) offer.
struct SandboxSupport {
    int landlock_abi = 0;             // 0: no Landlock
    std::string landlock_missing;     // why, when landlock_abi is 0
    bool unix_socket_filter = false;  // BPF cgroup/connect_unix and sendmsg_unix (Linux 6.7+)
    bool bind_filter = false;         // BPF cgroup/bind4 and bind6
    bool seccomp = false;             // seccomp filters (CONFIG_SECCOMP_FILTER)
};

enum class LayerState { pass, fallback, fail };
std::string_view to_string(LayerState state);  // "PASS", "FALLBACK", "FAIL"

struct SandboxLayer {
    std::string name;  // one of policy::kSandboxLayers
    LayerState state = LayerState::fail;
    std::string detail;  // what it closes, the fallback in its place, or why it is missing and what to do
};

// The layers an agent in `isolation` ("netns" or "cgroup") gets.
std::vector<SandboxLayer> sandbox_layers(const SandboxSupport& support, std::string_view isolation);

// Why a launch must be refused ("" when it may go ahead): a layer FAILs
// (a way out would stay open), or a layer in `required` does not PASS.
std::string sandbox_refusal(const std::vector<SandboxLayer>& layers, std::span<const std::string> required);

// "name=state,..." (lower case): what the agent is told in TAMEFLARE_SANDBOX.
std::string describe_layers(const std::vector<SandboxLayer>& layers);

}  // namespace tameflare::netns
