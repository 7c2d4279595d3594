#include "daemon/agents_internal.h"

namespace tameflare::daemon {

// Hands the agent's listener and DNS sockets to the data plane, which ties
// its connections to it by the tag. The BPF registration is the caller's.
void Agents::Impl::serve_agent(Agent& agent, UniqueFd proxy_socket, UniqueFd dns_udp, UniqueFd dns_tcp) {
    agent.registered = true;
    proxy->serve_agent(proxy::AgentSockets{agent.key, agent.gateway, agent.id, std::move(proxy_socket),
                                           std::move(dns_udp), std::move(dns_tcp)});
    agent.listening = true;
}

// Agents a previous daemon launched (it was killed, or restarted) are still
// in their cgroups, still routed by the pinned registrations to listeners
// that closed with it. Their listeners and stubs are opened again on the same
// ports where they are free (else new ports, and the registration follows),
// so their traffic resumes.
void Agents::Impl::adopt_running() {
    restore_enforced();
    const auto routes = enforcer.agents();
    std::error_code error;
    for (const auto& gateway : fs::directory_iterator(options.cgroup_root, error)) {
        if (!gateway.is_directory()) continue;
        for (const auto& agent : fs::directory_iterator(gateway.path(), error)) {
            if (!agent.is_directory()) continue;
            try {
                adopt(agent.path(), routes);
            } catch (const std::exception& failure) {
                log(LogLevel::warning, "cannot adopt the agent in " + agent.path().string() + ": " + failure.what(),
                    {{"CGROUP", agent.path().string()}});
            }
        }
    }
}

void Agents::Impl::adopt(const fs::path& directory, const std::map<std::uint64_t, bpf::AgentRoute>& routes) {
    auto agent = std::make_shared<Agent>();
    agent->cgroup.emplace(netns::Cgroup::open(directory));
    agent->key = agent->cgroup->id();
    agent->id = directory.filename().string();
    agent->gateway = directory.parent_path().filename().string();
    const auto route = routes.find(agent->key);
    const bool registered = route != routes.end();
    const auto pids = agent->cgroup->processes();
    if (pids.empty() || agents.count(agent->id) != 0) {
        // Ended: nothing to serve.
        agent->registered = registered;
        undo(*agent);
        return;
    }
    const UniqueFd ns_fd(::open(("/proc/" + std::to_string(pids.front()) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
    struct stat theirs {};
    struct stat ours {};
    if (!ns_fd || ::fstat(ns_fd.get(), &theirs) != 0 || ::stat("/proc/self/ns/net", &ours) != 0) {
        throw std::runtime_error("cannot open the network namespace of pid " + std::to_string(pids.front()));
    }
    agent->isolation = theirs.st_ino == ours.st_ino ? "cgroup" : "netns";
    // Its uid, from the kernel: a dynamic one stays taken while it runs.
    std::ifstream status("/proc/" + std::to_string(pids.front()) + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("Uid:", 0) != 0) continue;
        std::istringstream(line.substr(4)) >> agent->run_uid;
        break;
    }
    if (agent->run_uid >= options.dynamic_uid_first && agent->run_uid <= options.dynamic_uid_last) {
        agent->dynamic_uid = true;
        dynamic_uids.insert(agent->run_uid);
    }
    if (agent->isolation == "netns") agent->ns.emplace(netns::NetworkNamespace::adopt(UniqueFd(::dup(ns_fd.get()))));
    // Without a registration (the maps of an older layout were replaced) it gets new ports: until then its
    // connects were refused.
    bpf::AgentRoute next = registered ? route->second : bpf::AgentRoute{};
    auto open_at = [&](std::uint16_t port, bool tcp) {
        const proxy::Endpoint at{*proxy::IpAddress::parse("127.0.0.1"), port};
        const proxy::Endpoint any{*proxy::IpAddress::parse("127.0.0.1"), 0};
        try {
            if (agent->ns) return tcp ? agent->ns->listen_tcp(at) : agent->ns->bind_udp(at);
            return tcp ? netns::listen_tcp(at) : netns::bind_udp(at);
        } catch (const std::system_error&) {  // taken meanwhile: a new port, and the registration follows
            if (agent->ns) return tcp ? agent->ns->listen_tcp(any) : agent->ns->bind_udp(any);
            return tcp ? netns::listen_tcp(any) : netns::bind_udp(any);
        }
    };
    UniqueFd proxy_socket = open_at(next.proxy_port, true);
    UniqueFd dns_udp = open_at(next.dns_udp_port, false);
    UniqueFd dns_tcp = open_at(next.dns_tcp_port, true);
    next.proxy_port = netns::local_endpoint(proxy_socket.get()).port;
    next.dns_udp_port = netns::local_endpoint(dns_udp.get()).port;
    next.dns_tcp_port = netns::local_endpoint(dns_tcp.get()).port;
    if (!registered || !(next == route->second)) enforcer.add_agent(agent->key, next);
    serve_agent(*agent, std::move(proxy_socket), std::move(dns_udp), std::move(dns_tcp));
    apply_unix_policy(*agent);
    agent->exit_watch = std::make_unique<Descriptor>(io, ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (::inotify_add_watch(agent->exit_watch->native_handle(), (directory / "cgroup.events").c_str(), IN_MODIFY) < 0) {
        undo(*agent);
        throw std::runtime_error("cannot watch " + (directory / "cgroup.events").string());
    }
    log(LogLevel::notice, "agent " + agent->id + " adopted after a restart of tameflared",
        {{"AGENT", agent->id}, {"GATEWAY", agent->gateway}, {"ISOLATION", agent->isolation}});
    agents[agent->id] = agent;
    publish();
    net::co_spawn(io, watch_cgroup(agent), net::detached);
}

// An adopted agent is not our child: its end is its cgroup becoming empty,
// and its exit status is not known (-1 in the audit log).
net::awaitable<void> Agents::Impl::watch_cgroup(std::shared_ptr<Agent> agent) {
    for (;;) {
        if (!agent->cgroup || !agent->cgroup->populated()) break;
        error_code error;
        co_await agent->exit_watch->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error) co_return;
        std::array<char, 4096> events{};
        while (::read(agent->exit_watch->native_handle(), events.data(), events.size()) > 0) {
        }
    }
    if (agents.count(agent->id) != 0) finish(*agent, -1);
}

// Closes the agent's stub and listener and removes its registration.
void Agents::Impl::undo_registration(Agent& agent) {
    if (agent.listening) proxy->stop_agent(agent.key);
    agent.listening = false;
    if (agent.registered) enforcer.remove_agent(agent.key);
    agent.registered = false;
}

// Tears down what a launch or an agent's life set up, in reverse.
void Agents::Impl::undo(Agent& agent) {
    undo_registration(agent);
    bool emptied = true;
    if (agent.cgroup && !agent.cgroup->remove(std::chrono::seconds(5))) {
        emptied = false;
        log(LogLevel::warning, "the cgroup of agent " + agent.id + " could not be removed",
            {{"AGENT", agent.id}, {"CGROUP", agent.cgroup->path().string()}});
    }
    agent.cgroup.reset();
    agent.ns.reset();
    // Its processes are gone with its cgroup: the uid may serve another agent (else it stays taken).
    if (agent.dynamic_uid && emptied) dynamic_uids.erase(agent.run_uid);
    agent.dynamic_uid = false;
}

// Moves aside the protected names the agent made, and says so to the journal and to tf run.
void Agents::Impl::sweep_names(Agent& agent) {
    if (!agent.names) return;
    for (const auto& moved : agent.names->sweep()) {
        const std::string text = "agent " + agent.id + " created a protected path; moved aside: " + moved;
        log(LogLevel::warning, text, {{"AGENT", agent.id}, {"GATEWAY", agent.gateway}, {"MOVED", moved}});
        if (agent.client) reply(*agent.client, json{{"type", "note"}, {"message", text}});
    }
}

// Until the agent ends: each time something is created in a directory that holds a protected name.
net::awaitable<void> Agents::Impl::watch_names(std::shared_ptr<Agent> agent) {
    for (;;) {
        error_code error;
        co_await agent->names_watch->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error || agents.count(agent->id) == 0) co_return;
        sweep_names(*agent);
    }
}

void Agents::Impl::finish(Agent& agent, int status) {
    // The agent's processes are gone: the last sweep leaves nothing of its making under a protected name.
    sweep_names(agent);
    if (agent.names_watch) agent.names_watch->close();
    if (agent.client) reply(*agent.client, json{{"type", "exited"}, {"status", status}});
    undo(agent);
    sweep_names(agent);  // again once the cgroup is empty: a create that was in flight at the kill has landed
    if (store != nullptr) store->agent_exited(agent.id, status);
    log(LogLevel::notice, "agent " + agent.id + " exited with status " + std::to_string(status),
        {{"MESSAGE_ID", message_id::agent_exited},
         {"AGENT", agent.id},
         {"GATEWAY", agent.gateway},
         {"EXIT_STATUS", std::to_string(status)}});
    // Announced once list() no longer shows it, so a watcher that reacts to
    // the event sees the agent gone.
    const AgentInfo ended = info(agent);
    agents.erase(agent.id);
    publish();
    if (observer) observer("agent.exited", ended, status);
}

net::awaitable<void> Agents::Impl::watch_exit(std::shared_ptr<Agent> agent) {
    error_code error;
    co_await agent->exit_watch->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
    if (error == net::error::operation_aborted) co_return;
    int status = 0;
    const auto result = agent->process->try_wait();
    status = result.value_or(255);
    // Whatever the agent left behind (a double-forked daemon) ends with it.
    if (agent->cgroup) agent->cgroup->kill();
    finish(*agent, status);
}

}  // namespace tameflare::daemon
