// The agents tameflared launches and enforces: the BPF programs on the
// agents' cgroup root, one cgroup (and by default one network namespace)
// per agent with its own proxy listener and DNS stub, the launch socket
// `tf run` talks to, and the origin look-up the proxy asks for every
// redirected connection.
#pragma once

#include "daemon/proxy/interfaces.h"
#include "policy/config.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::proxy {
class ProxyServer;
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
};

struct AgentInfo {
    std::string id;
    std::string gateway;
    std::string isolation;
    std::uint64_t cgroup_id = 0;
    int pid = 0;
    unsigned uid = 0;
};

class Agents final : public proxy::OriginLookup {
public:
    // Loads the BPF programs and attaches them to the cgroup root (re-adopting
    // what an earlier daemon pinned). Throws std::runtime_error with the reason.
    Agents(AgentsOptions options, const policy::ConfigStore& config, store::Store* store);
    ~Agents() override;
    Agents(const Agents&) = delete;
    Agents& operator=(const Agents&) = delete;

    // Opens the launch socket and starts serving; `proxy` serves the agents' listeners.
    void start(proxy::ProxyServer& proxy);
    // Closes the launch socket and ends the agents it launched.
    void stop();

    // After a configuration reload: the DNS stubs answer the names the
    // gateways now allow.
    void reload();

    std::optional<proxy::Origin> lookup(const proxy::AcceptedConnection& connection) override;
    [[nodiscard]] std::vector<AgentInfo> list() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// <cgroup2 mount>/tameflare: the root used when the configuration names none.
std::filesystem::path default_cgroup_root();

}  // namespace tameflare::daemon
