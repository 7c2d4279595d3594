// The agents tameflared launches and enforces: the BPF programs on the
// agents' cgroup root, one cgroup (and by default one network namespace)
// per agent with its own proxy listener and DNS stub, the launch socket
// `tf run` talks to, and the origin look-up the proxy asks for every
// redirected connection.
#pragma once

#include "common/caller.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "daemon/control/agent_registry.h"
#include "daemon/proxy/interfaces.h"
#include "policy/config.h"

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include "bpf/origin_map.h"
#include "common/unique_fd.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tameflare::proxy {
class DataPlane;
}
namespace tameflare::store {
class Store;
}

namespace tameflare::daemon {

struct AgentsOptions {
    std::filesystem::path cgroup_root;    // BPF is attached here; agents live in <root>/<gateway>/<agent>
    std::filesystem::path pin_dir;        // BPF pins
    std::filesystem::path launch_socket;  // where tf run connects
    std::filesystem::path ca_bundle;      // written at start: the system CAs and the daemon's CA
    std::string ca_certificate_pem;       // the daemon's interception CA
    std::string default_isolation = "netns";
    std::vector<std::filesystem::path> hidden;  // directories agents must not see (state, BPF pins)
    // The daemon's own sockets (REST, D-Bus system bus): never on an agent's unix_sockets list, whatever a gateway
    // says (the launch socket is added to them).
    std::vector<std::filesystem::path> own_sockets;
    // Agents launched by root under run_as "dynamic" get a uid (and gid) of their own from this range.
    std::uint32_t dynamic_uid_first = 2147287040;
    std::uint32_t dynamic_uid_last = 2147352575;
    // false: the kernel's unix socket filter is not used even where it exists (the fallback applies).
    bool unix_socket_filter = true;
};

using control::AgentInfo;

// A launch or enforcement refused: what is wrong and how to fix it.
class LaunchError : public Error {
public:
    using Error::Error;
};

// agent.started (status 0) and agent.exited (the exit status), on the agents' thread.
using AgentObserver = std::function<void(const std::string& type, const AgentInfo& agent, int status)>;

class Agents final : public control::AgentRegistry {
public:
    // Loads the BPF programs and attaches them to the cgroup root (re-adopting
    // what an earlier daemon pinned). Throws std::runtime_error with the reason.
    Agents(AgentsOptions options, const policy::ConfigStore& config, store::Store* store);
    ~Agents() override;
    Agents(const Agents&) = delete;
    Agents& operator=(const Agents&) = delete;

    // Opens the launch socket and starts serving; `proxy` serves the agents'
    // listeners and DNS stubs.
    void start(proxy::DataPlane& proxy);
    // Closes the launch socket and ends the agents it launched.
    void stop();

    void reload() override;
    // Whether its event loop runs a posted handler within `timeout` (the watchdog).
    [[nodiscard]] bool responsive(std::chrono::milliseconds timeout) const;

    // What a redirected connection dialed (the data plane asks where its
    // kernel refuses it the map), and a read-only descriptor of the map for it.
    [[nodiscard]] std::optional<bpf::Origin> origin(std::uint64_t netns_cookie, const Endpoint& client) const;
    [[nodiscard]] UniqueFd origin_map_readonly() const;
    // control::AgentRegistry (the control plane's view, agent_registry.h);
    // launch() throws LaunchError.
    [[nodiscard]] std::vector<AgentInfo> list() const override;
    [[nodiscard]] bool is_agent_cgroup(const std::string& cgroup) const override;
    StopResult stop_agent(const std::string& id) override;
    std::string launch(const Caller& caller, const nlohmann::json& request, std::vector<UniqueFd> fds) override;

    // Set before start().
    void on_event(AgentObserver observer);

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// <cgroup2 mount>/tameflare: the root used when the configuration names none.
std::filesystem::path default_cgroup_root();

}  // namespace tameflare::daemon
