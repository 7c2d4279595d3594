#include "daemon/agents_internal.h"

namespace tameflare::daemon {

// One piece over 100 lines: the launch's steps in their order (authorize, identity, cgroup, namespaces, listeners,
// filesystem view, spawn), each undone by the RAII guards it holds or by undo(); read top to bottom, the order is
// the security argument (docs/enforcement.md), as for netns::spawn.
// NOLINTNEXTLINE(readability-function-size)
std::shared_ptr<Agent> Agents::Impl::launch(const Caller& peer, const json& request, std::vector<UniqueFd>& fds) {
    if (fds.size() != 4) throw LaunchError("a launch passes 4 descriptors (stdin, stdout, stderr, cwd)", "use tf run");
    const std::string gateway_name = request.value("gateway", "");
    const auto snapshot = config.snapshot();
    const policy::Gateway* gateway = snapshot->gateway(gateway_name);
    authorizer.authorize_launch(peer, gateway);  // agents first: they learn no gateway's name
    if (gateway == nullptr) {
        std::string known;
        for (const auto& [name, value] : snapshot->gateways) known += (known.empty() ? "" : ", ") + name;
        throw LaunchError("unknown gateway \"" + gateway_name + "\"", "configured gateways: " + known);
    }
    const auto argv_json = request.value("argv", json::array());
    const auto env_json = request.value("env", json::array());
    if (!argv_json.is_array() || argv_json.empty() || !env_json.is_array()) {
        throw LaunchError("the launch request has no command", "tf run --gateway G -- COMMAND [ARGS...]");
    }
    const std::string isolation = request.value("isolation", options.default_isolation);
    if (isolation != "netns" && isolation != "cgroup") {
        throw LaunchError("unknown isolation \"" + isolation + "\"", "use netns (the default) or cgroup");
    }
    std::string id = request.value("name", "");
    if (id.empty()) id = gateway_name + "-" + random_suffix();
    if (!valid_name(id)) {
        throw LaunchError("invalid agent name \"" + id + "\"", "use up to 48 lower-case letters, digits, '-' and '_'");
    }
    if (agents.count(id) != 0) throw LaunchError("an agent named " + id + " is running", "choose another --name");
    // Never weaker than said: a layer the kernel cannot give, and no fallback for it, refuses the launch.
    const auto layers = netns::sandbox_layers(support, isolation);
    std::vector<std::string> required(policy::kMinimumLayers.begin(), policy::kMinimumLayers.end());
    required.insert(required.end(), gateway->require_layers.begin(), gateway->require_layers.end());
    if (const std::string refusal = netns::sandbox_refusal(layers, required); !refusal.empty()) {
        throw LaunchError(refusal, "tf doctor --gateway " + gateway_name + " lists the layers this kernel gives");
    }

    auto agent = std::make_shared<Agent>();
    agent->id = id;
    agent->gateway = gateway_name;
    agent->isolation = isolation;
    agent->uid = peer.uid;
    std::vector<std::string> argv;
    for (const auto& arg : argv_json) {
        if (!arg.is_string()) throw LaunchError("argv holds a non-string", "use tf run");
        argv.push_back(arg.get<std::string>());
        agent->command += (agent->command.empty() ? "" : " ") + argv.back();
    }
    std::vector<std::string> env;
    std::string caller_home;  // $HOME as tf run saw it
    for (const auto& variable : env_json) {
        if (!variable.is_string()) throw LaunchError("env holds a non-string", "use tf run");
        const auto text = variable.get<std::string>();
        if (text.starts_with("HOME=/")) caller_home = text.substr(5);
        if (text.find('=') == std::string::npos || stripped(text, gateway->strip_environment)) continue;
        // Root's agent runs as another user: that user's home and name, not root's (set below).
        if (peer.uid != 0 ||
            !(text.rfind("HOME=", 0) == 0 || text.rfind("USER=", 0) == 0 || text.rfind("LOGNAME=", 0) == 0)) {
            env.push_back(text);
        }
    }
    // Allocated last: nothing between here and the undo below may fail without giving a dynamic uid back.
    const Identity identity = identity_for(peer, *gateway);
    agent->run_uid = identity.uid;
    agent->dynamic_uid = identity.dynamic;
    if (peer.uid == 0) {
        if (!identity.home.empty()) env.push_back("HOME=" + identity.home);
        if (!identity.user.empty()) {
            env.push_back("USER=" + identity.user);
            env.push_back("LOGNAME=" + identity.user);
        }
    }
    for (const auto& name : kBundleVariables) env.push_back(std::string(name) + "=" + options.ca_bundle.string());
    add_java_trust(env, java_trust_store_for(options.ca_bundle).string());
    add_connector_environment(*gateway, env);
    env.push_back("TAMEFLARE_AGENT=" + id);
    env.push_back("TAMEFLARE_GATEWAY=" + gateway_name);
    env.push_back("TAMEFLARE_SANDBOX=" + netns::describe_layers(layers));

    try {
        const fs::path parent = options.cgroup_root / gateway_name;
        netns::ensure_cgroup(parent);
        agent->cgroup.emplace(netns::Cgroup::create(parent, id));
        agent->key = agent->cgroup->id();
        const auto loopback = *proxy::Endpoint::parse("127.0.0.1:0");
        UniqueFd proxy_socket;
        UniqueFd dns_udp;
        UniqueFd dns_tcp;
        if (isolation == "netns") {
            agent->ns.emplace(netns::NetworkNamespace::create());
            proxy_socket = agent->ns->listen_tcp(loopback);
            dns_udp = agent->ns->bind_udp(loopback);
            dns_tcp = agent->ns->listen_tcp(loopback);
        } else {
            proxy_socket = netns::listen_tcp(loopback);
            dns_udp = netns::bind_udp(loopback);
            dns_tcp = netns::listen_tcp(loopback);
        }
        bpf::AgentRoute route;
        route.proxy_port = netns::local_endpoint(proxy_socket.get()).port;
        route.dns_udp_port = netns::local_endpoint(dns_udp.get()).port;
        route.dns_tcp_port = netns::local_endpoint(dns_tcp.get()).port;
        enforcer.add_agent(agent->key, route);
        const auto unix_sockets = unix_policy(*gateway, isolation == "netns", false);
        if (support.unix_socket_filter) enforcer.set_unix_policy(agent->key, unix_sockets);
        serve_agent(*agent, std::move(proxy_socket), std::move(dns_udp), std::move(dns_tcp));

        netns::SpawnOptions spawn;
        spawn.argv = std::move(argv);
        spawn.env = std::move(env);
        spawn.stdin_fd = fds[0].get();
        spawn.stdout_fd = fds[1].get();
        spawn.stderr_fd = fds[2].get();
        spawn.cwd_fd = fds[3].get();
        spawn.uid = identity.uid;
        spawn.gid = identity.gid;
        spawn.groups = identity.groups;
        spawn.cgroup_fd = agent->cgroup->fd();
        spawn.netns_fd = agent->ns ? agent->ns->fd() : -1;
        const UniqueFd caller_mounts = caller_mount_namespace(peer);
        spawn.mount_namespace_fd = caller_mounts.get();
        // The filesystem section: '~' is the agent's home (the launching user's, or the run_as user's when root
        // launches); what is hidden is hidden under every home in play.
        netns::FilesystemInputs inputs;
        const std::string launcher_home = passwd_home(peer.uid);
        inputs.paths.home = peer.uid == 0 && !identity.home.empty() ? identity.home
                            : !caller_home.empty()                  ? caller_home
                                                                    : launcher_home;
        inputs.paths.workdir = working_directory(fds[3].get());
        inputs.other_homes = {launcher_home, caller_home};
        if (peer.uid == 0 && identity.home != "/") inputs.other_homes.push_back(identity.home);
        UniqueFd root_fd;
        inputs.lookup_root = caller_root(peer, caller_mounts.get(), root_fd);
        const netns::FilesystemView view = netns::resolve_filesystem(gateway->filesystem, inputs);
        agent->notes = view.notes;
        agent->filesystem = json{{"write", view.write},
                                 {"private_tmp", view.private_tmp},
                                 {"pins", view.pins},
                                 {"protect", view.protect},
                                 {"hide", view.hide}};
        agent->names = std::make_unique<netns::ProtectedNameGuard>(view.absent, inputs.lookup_root, id);
        spawn.cwd_path = inputs.paths.workdir;
        spawn.private_tmp = view.private_tmp;
        spawn.pins = view.pins;
        spawn.protect = view.protect;
        spawn.binds.push_back(netns::BindFile{options.ca_bundle.string(),
                                              std::vector<std::string>(kBundlePaths.begin(), kBundlePaths.end())});
        spawn.binds.push_back(netns::BindFile{resolv_conf().string(), {"/etc/resolv.conf"}});
        // The JVM's default trust store too (same type and password), for a JVM started without JAVA_TOOL_OPTIONS.
        spawn.binds.push_back(
            netns::BindFile{java_trust_store_for(options.ca_bundle).string(),
                            std::vector<std::string>(kJavaStorePaths.begin(), kJavaStorePaths.end())});
        for (const auto& directory : options.hidden) spawn.hide.push_back(directory.string());
        spawn.hide.insert(spawn.hide.end(), view.hide.begin(), view.hide.end());
        if (!support.unix_socket_filter) {
            hide_service_sockets(spawn, unix_sockets.allow, peer, identity.uid, spawn.env);
        }
        spawn.pid_namespace = true;
        spawn.proc_pids_only = gateway->proc_pids_only;
        // ptrace always; signals and abstract sockets from ABI 6; writes only where the filesystem section says.
        const netns::LandlockPolicy landlock = netns::write_ruleset(view);
        spawn.landlock = &landlock;
        spawn.landlock_abi = support.landlock_abi;
        spawn.seccomp = &seccomp;
        agent->process.emplace(netns::spawn(spawn));
    } catch (const LaunchError&) {
        undo(*agent);
        throw;
    } catch (const std::exception& error) {
        undo(*agent);
        throw LaunchError(error.what(), "");
    }
    if (store != nullptr) {
        store->agent_started(store::AgentRow{id, gateway_name, id, peer.uid, agent->process->pid(), agent->command,
                                             std::chrono::system_clock::now()});
    }
    log(LogLevel::notice, "agent " + id + " started on gateway " + gateway_name,
        {{"MESSAGE_ID", message_id::agent_started},
         {"AGENT", id},
         {"GATEWAY", gateway_name},
         {"ISOLATION", isolation},
         {"AGENT_UID", std::to_string(peer.uid)},
         {"RUN_UID", std::to_string(identity.uid)},
         {"AGENT_PID", std::to_string(agent->process->pid())},
         {"SANDBOX", netns::describe_layers(layers)},
         {"COMMAND", agent->command}});
    for (const auto& note : agent->notes) {
        log(LogLevel::notice, "agent " + id + ": " + note, {{"AGENT", id}, {"GATEWAY", gateway_name}});
    }
    if (agent->names && agent->names->fd() >= 0) {
        agent->names_watch = std::make_unique<Descriptor>(io, ::fcntl(agent->names->fd(), F_DUPFD_CLOEXEC, 3));
        net::co_spawn(io, watch_names(agent), net::detached);
    }
    agents[id] = agent;
    publish();
    if (observer) observer("agent.started", info(*agent), 0);
    return agent;
}

}  // namespace tameflare::daemon
