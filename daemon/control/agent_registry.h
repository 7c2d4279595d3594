// What the control plane and its front ends need of the agents, as an
// interface the agents (daemon/agents.h) implement: so that daemon/control
// and dbus/ depend on this header, not on the agents' implementation.
#pragma once

#include "common/caller.h"
#include "common/unique_fd.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tameflare::control {

struct AgentInfo {
    std::string id;
    std::string gateway;
    std::string isolation;
    std::uint64_t cgroup_id = 0;
    int pid = 0;
    unsigned uid = 0;      // who launched it
    unsigned run_uid = 0;  // the uid it runs as
    std::string command;
    bool enforced_unit = false;  // an existing cgroup put under a gateway by tf enforce
};

class AgentRegistry {
public:
    virtual ~AgentRegistry() = default;

    [[nodiscard]] virtual std::vector<AgentInfo> list() const = 0;
    // Whether a process in `cgroup` ("/a/b" under the cgroup2 mount; "" when
    // unknown) is an agent: inside the agents' root or an enforced cgroup.
    // The control plane refuses such callers. Thread-safe.
    [[nodiscard]] virtual bool is_agent_cgroup(const std::string& cgroup) const = 0;

    enum class StopResult { stopped, unknown, enforced_unit };
    // Kills the agent's cgroup (its end is then reported as usual); an
    // enforced unit is not ours to kill. Thread-safe.
    virtual StopResult stop_agent(const std::string& id) = 0;

    // A launch asked for other than through the launch socket (D-Bus, through
    // Control::launch): the same checks and request fields as tf run's
    // ({"gateway", "name", "isolation", "argv", "env"}), `fds` being stdin,
    // stdout, stderr and an O_PATH descriptor of the working directory.
    // Returns the agent id; a refusal throws a tameflare::Error with its hint.
    virtual std::string launch(const Caller& caller, const nlohmann::json& request, std::vector<UniqueFd> fds) = 0;

    // After a configuration reload: the DNS stubs answer the names the
    // gateways now allow.
    virtual void reload() = 0;
};

}  // namespace tameflare::control
