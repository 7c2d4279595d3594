#include "netns/sandbox.h"

#include "netns/landlock.h"

#include <algorithm>

namespace tameflare::netns {

std::string_view to_string(LayerState state) {
    switch (state) {
        case LayerState::pass: return "PASS";
        case LayerState::fallback: return "FALLBACK";
        case LayerState::fail: return "FAIL";
    }
    return "FAIL";
}

std::vector<SandboxLayer> sandbox_layers(const SandboxSupport& support, std::string_view isolation) {
    const bool own_network = isolation == "netns";
    std::vector<SandboxLayer> layers;
    layers.push_back({"pid_namespace", LayerState::pass,
                      "own PID namespace and procfs: no process outside can be named, traced or signalled"});
    if (support.landlock_abi > 0) {
        layers.push_back({"landlock", LayerState::pass,
                          "Landlock ABI " + std::to_string(support.landlock_abi) +
                              ": no ptrace, /proc/PID/mem or environ of a process outside the agent"});
    } else {
        layers.push_back({"landlock", LayerState::fail,
                          !support.landlock_missing.empty()
                              ? support.landlock_missing
                              : "Landlock is not enabled in this kernel: add landlock to the lsm= boot parameter "
                                "(cat /sys/kernel/security/lsm shows the active list)"});
    }
    if (support.landlock_abi >= kLandlockScopeAbi) {
        layers.push_back(
            {"landlock_scopes", LayerState::pass, "no signal to, and no abstract unix socket of, anything outside"});
    } else if (own_network || support.unix_socket_filter) {
        layers.push_back({"landlock_scopes", LayerState::fallback,
                          std::string("Landlock ABI ") + std::to_string(support.landlock_abi) +
                              " has no scopes (6+): signals stay closed by the PID namespace, abstract sockets by " +
                              (own_network ? "the agent's own network namespace" : "the unix socket filter")});
    } else {
        layers.push_back({"landlock_scopes", LayerState::fail,
                          "neither Landlock scopes (ABI 6+) nor the unix socket filter (Linux 6.7+): the host's "
                          "abstract unix sockets would be reachable in cgroup isolation; use --isolation netns"});
    }
    if (support.unix_socket_filter) {
        layers.push_back({"unix_socket_filter", LayerState::pass,
                          "connect and sendmsg to unix sockets only on the gateway's unix_sockets list"});
    } else {
        layers.push_back({"unix_socket_filter", LayerState::fallback,
                          "no cgroup/connect_unix (Linux 6.7+): the known service sockets (XDG_RUNTIME_DIR, tmux, "
                          "screen, X11, docker, the system bus, tameflared's own) are hidden in the agent's mount "
                          "namespace; a socket elsewhere stays reachable"});
    }
    if (support.bind_filter) {
        layers.push_back({"bind_filter", LayerState::pass, "binds only loopback (the any-address becomes loopback)"});
    } else if (own_network) {
        layers.push_back({"bind_filter", LayerState::fallback,
                          "no cgroup/bind hooks: the agent's network namespace has only loopback"});
    } else {
        layers.push_back({"bind_filter", LayerState::fail,
                          "no cgroup/bind hooks: in cgroup isolation the agent could listen on the host's "
                          "interfaces; use --isolation netns"});
    }
    if (support.seccomp) {
        layers.push_back({"seccomp", LayerState::pass,
                          "no new user namespace, so no chroot or mount in one to reach a socket through an allowed "
                          "path"});
    } else {
        layers.push_back({"seccomp", LayerState::fail,
                          "this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER): an agent could make a user "
                          "namespace and chroot around the unix socket list"});
    }
    return layers;
}

std::string sandbox_refusal(const std::vector<SandboxLayer>& layers, std::span<const std::string> required) {
    for (const auto& layer : layers) {
        if (layer.state == LayerState::fail) return "the sandbox layer " + layer.name + " is missing: " + layer.detail;
    }
    for (const auto& name : required) {
        const auto found =
            std::find_if(layers.begin(), layers.end(), [&](const SandboxLayer& layer) { return layer.name == name; });
        if (found == layers.end()) return "unknown sandbox layer " + name;
        if (found->state != LayerState::pass) {
            return "the gateway requires the sandbox layer " + name + ", which this kernel gives only as a " +
                   "fallback: " + found->detail;
        }
    }
    return {};
}

std::string describe_layers(const std::vector<SandboxLayer>& layers) {
    std::string out;
    for (const auto& layer : layers) {
        if (!out.empty()) out += ',';
        std::string state(to_string(layer.state));
        std::transform(state.begin(), state.end(), state.begin(), [](char c) { return static_cast<char>(c | 0x20); });
        out += layer.name + "=" + state;
    }
    return out;
}

}  // namespace tameflare::netns
