#include "daemon/agents_internal.h"

namespace tameflare::daemon {

// Whether a process in `cgroup` ("/x/y" under the mount; "" when it is gone)
// is an agent: inside the agents' root or a cgroup put under enforcement.
bool Agents::Impl::inside_agents(const std::string& cgroup) const {
    if (cgroup.empty()) return true;
    std::lock_guard lock(mutex);
    if (is_within(cgroup, root_cgroup)) return true;
    return std::any_of(enforced_cgroups.begin(), enforced_cgroups.end(),
                       [&](const std::string& path) { return is_within(cgroup, path); });
}

void Agents::Impl::start_enforcing(const fs::path& cgroup, const std::string& gateway, const std::string& name) {
    auto agent = std::make_shared<Agent>();
    agent->id = name;
    agent->gateway = gateway;
    agent->isolation = "cgroup";
    agent->enforced_unit = true;
    agent->cgroup.emplace(netns::Cgroup::open(cgroup));
    agent->key = agent->cgroup->id();
    const auto loopback = *proxy::Endpoint::parse("127.0.0.1:0");
    UniqueFd proxy_socket = netns::listen_tcp(loopback);
    UniqueFd dns_udp = netns::bind_udp(loopback);
    UniqueFd dns_tcp = netns::listen_tcp(loopback);
    bpf::AgentRoute route;
    route.proxy_port = netns::local_endpoint(proxy_socket.get()).port;
    route.dns_udp_port = netns::local_endpoint(dns_udp.get()).port;
    route.dns_tcp_port = netns::local_endpoint(dns_tcp.get()).port;
    // Registered before the programs are attached: from the first moment,
    // every connect of the cgroup has somewhere to go.
    enforcer.add_agent(agent->key, route);
    apply_unix_policy(*agent);
    serve_agent(*agent, std::move(proxy_socket), std::move(dns_udp), std::move(dns_tcp));
    try {
        enforcer.enforce(cgroup);
    } catch (...) {
        undo_registration(*agent);
        throw;
    }
    agents[agent->id] = agent;
    publish();
    log(LogLevel::notice, "cgroup " + cgroup.string() + " is under gateway " + gateway + " as " + name,
        {{"AGENT", name}, {"GATEWAY", gateway}, {"CGROUP", cgroup.string()}});
}

// Enforced units whose cgroup is gone (systemd removes a stopped unit's
// cgroup, and the kernel severs its links) are forgotten, so that the unit's
// next start is enforced again under the same name. A cgroup made again
// under the same path is another cgroup (another id): the old one is gone.
void Agents::Impl::forget_vanished_units() {
    std::vector<std::shared_ptr<Agent>> gone;
    std::error_code error;
    for (const auto& [id, agent] : agents) {
        if (!agent->enforced_unit || !agent->cgroup) continue;
        // Gone, or made again under the same path (a new cgroup id).
        const fs::path path = agent->cgroup->path();
        if (!fs::exists(path / "cgroup.procs", error) || netns::cgroup_id(path) != agent->key) gone.push_back(agent);
    }
    for (const auto& agent : gone) {
        undo_registration(*agent);
        agents.erase(agent->id);
        log(LogLevel::notice, "cgroup " + agent->cgroup->path().string() + " is gone; its enforcement ended",
            {{"AGENT", agent->id}, {"GATEWAY", agent->gateway}});
    }
    if (!gone.empty()) {
        publish();
        save_enforced();
    }
}

json Agents::Impl::enforce(const Caller& peer, const json& request) {
    authorizer.authorize_enforcement(peer, "put a cgroup under enforcement");
    forget_vanished_units();
    const fs::path mount = netns::cgroup2_mount();
    const fs::path cgroup = fs::weakly_canonical(fs::path(request.value("cgroup", "")));
    const std::string relative = "/" + cgroup.lexically_relative(mount).string();
    std::error_code error;
    if (!fs::is_directory(cgroup, error) || relative.rfind("/..", 0) == 0 || cgroup == mount ||
        !fs::exists(cgroup / "cgroup.procs", error)) {
        throw LaunchError("not a cgroup: " + cgroup.string(), "give a directory below " + mount.string());
    }
    const std::string own = "/" + netns::own_cgroup().lexically_relative(mount).string();
    if (is_within(own, relative) || is_within(relative, "/" + options.cgroup_root.lexically_relative(mount).string())) {
        throw LaunchError("cgroup " + cgroup.string() + " holds tameflared itself or its agents",
                          "enforce a service's own cgroup");
    }
    const std::string gateway = request.value("gateway", "");
    if (config.snapshot()->gateway(gateway) == nullptr) {
        throw LaunchError("unknown gateway \"" + gateway + "\"", "tf policy check lists the gateways");
    }
    std::string name = request.value("name", "");
    if (name.empty()) name = "unit-" + std::to_string(netns::cgroup_id(cgroup));
    if (!valid_name(name)) throw LaunchError("invalid name \"" + name + "\"", "lower-case letters, digits, - and _");
    const auto id = netns::cgroup_id(cgroup);
    for (const auto& [existing, agent] : agents) {
        if (agent->key == id) throw LaunchError(cgroup.string() + " is already enforced as " + existing, "");
    }
    if (agents.count(name) != 0) throw LaunchError("the name " + name + " is taken", "choose another --name");
    start_enforcing(cgroup, gateway, name);
    save_enforced();
    if (store != nullptr) {
        store->audit(store::AuditEvent{std::chrono::system_clock::now(), "enforcement.added", gateway, name,
                                       "uid:" + std::to_string(peer.uid) + " pid:" + std::to_string(peer.pid),
                                       cgroup.string(), json{{"cgroup", cgroup.string()}}.dump()});
    }
    return json{{"type", "enforced"}, {"agent", name}, {"cgroup_id", id}};
}

json Agents::Impl::release(const Caller& peer, const json& request) {
    authorizer.authorize_enforcement(peer, "release a cgroup from enforcement");
    const fs::path cgroup = fs::weakly_canonical(fs::path(request.value("cgroup", "")));
    std::error_code error;
    const auto id = fs::exists(cgroup, error) ? netns::cgroup_id(cgroup) : 0;
    const auto found = std::find_if(agents.begin(), agents.end(), [&](const auto& entry) {
        return entry.second->enforced_unit && entry.second->key == id;
    });
    if (id == 0 || found == agents.end()) throw LaunchError(cgroup.string() + " is not under enforcement", "");
    const auto agent = found->second;
    enforcer.release(cgroup);
    undo_registration(*agent);
    agents.erase(found);
    publish();
    save_enforced();
    if (store != nullptr) {
        store->audit(store::AuditEvent{std::chrono::system_clock::now(), "enforcement.released", agent->gateway,
                                       agent->id,
                                       "uid:" + std::to_string(peer.uid) + " pid:" + std::to_string(peer.pid),
                                       cgroup.string(), json{{"cgroup", cgroup.string()}}.dump()});
    }
    log(LogLevel::notice, "cgroup " + cgroup.string() + " released from enforcement",
        {{"AGENT", agent->id}, {"CGROUP", cgroup.string()}});
    return json{{"type", "released"}, {"agent", agent->id}};
}

// The enforced cgroups live outside the agents' root: which they are, and
// under which gateway, is kept in the database for the next daemon.
void Agents::Impl::save_enforced() {
    if (store == nullptr) return;
    json list = json::array();
    for (const auto& [id, agent] : agents) {
        if (!agent->enforced_unit || !agent->cgroup) continue;
        list.push_back({{"cgroup", agent->cgroup->path().string()}, {"gateway", agent->gateway}, {"name", id}});
    }
    store->set_state("enforced_cgroups", list.dump(),
                     store::AuditEvent{std::chrono::system_clock::now(), "enforcement.saved", "", "", "tameflared", "",
                                       json{{"cgroups", list.size()}}.dump()});
}

void Agents::Impl::restore_enforced() {
    if (store == nullptr) return;
    const auto saved = store->state("enforced_cgroups");
    if (!saved) return;
    const json list = json::parse(*saved, nullptr, false);
    if (!list.is_array()) return;
    for (const auto& entry : list) {
        const fs::path cgroup = entry.value("cgroup", "");
        std::error_code error;
        if (!fs::is_directory(cgroup, error)) continue;  // the service's cgroup is gone: so is its enforcement
        try {
            // The pinned links stay attached meanwhile; registering again points them at new listeners.
            start_enforcing(cgroup, entry.value("gateway", ""), entry.value("name", ""));
        } catch (const std::exception& failure) {
            log(LogLevel::error, "cannot enforce " + cgroup.string() + " again: " + failure.what(),
                {{"CGROUP", cgroup.string()}});
        }
    }
}

}  // namespace tameflare::daemon
