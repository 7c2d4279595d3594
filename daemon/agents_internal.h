// The agents' insides, shared by the files that do each job and by nothing
// else (daemon/agents.h is the interface): agents.cpp (the registry and the
// public calls), agent_launcher.cpp (a launch), agent_enforcement.cpp (tf
// enforce: units put under a gateway), agent_lifecycle.cpp (serving, adopting
// after a restart, watching and ending agents), launch_server.cpp (the launch
// socket), agent_support.cpp (identities, paths and files a launch needs).
#pragma once

#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "daemon/agents.h"

#include "bpf/enforcer.h"
#include "common/atomic_file.h"
#include "common/log.h"
#include "common/text.h"
#include "common/users.h"
#include "daemon/agent_environment.h"
#include "daemon/control/authorizer.h"
#include "daemon/proxy/asio.h"
#include "daemon/proxy/data_plane.h"
#include "daemon/proxy/liveness.h"
#include "daemon/proxy/trust_store.h"
#include "daemon/store/store.h"
#include "netns/cgroup.h"
#include "netns/filesystem.h"
#include "netns/landlock.h"
#include "netns/launch_protocol.h"
#include "netns/namespaces.h"
#include "netns/sandbox.h"
#include "netns/seccomp.h"
#include "netns/spawn.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace tameflare::daemon {

namespace fs = std::filesystem;
namespace net = boost::asio;
using error_code = boost::system::error_code;
using Descriptor = net::posix::stream_descriptor;
using nlohmann::json;

namespace agents_detail {

// Where distributions keep the CA bundle; the agent's private mount
// namespace shows ours at each of these that exists.
constexpr std::array<std::string_view, 5> kBundlePaths{
    "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"};
// Where distributions keep the JVM's default trust store (PKCS#12, password
// "changeit" since Java 9): the agent sees the Java trust store there.
constexpr std::array<std::string_view, 2> kJavaStorePaths{"/etc/ssl/certs/java/cacerts",
                                                          "/etc/pki/ca-trust/extracted/java/cacerts"};
// Programs read the bundle from these, whatever the distribution.
constexpr std::array<std::string_view, 8> kBundleVariables{
    "SSL_CERT_FILE",  "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO", "PIP_CERT",           "DENO_CERT",           "AWS_CA_BUNDLE"};
// Signals tf run may forward to its agent.
constexpr std::array<int, 9> kForwardable{SIGINT,  SIGTERM,  SIGHUP,  SIGQUIT, SIGUSR1,
                                          SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP};

// Who an agent runs as (docs/enforcement.md, "Who").
struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    std::string user;  // "" for a dynamic uid or the caller's own
    std::string home;
    bool dynamic = false;
};

bool valid_name(const std::string& name);

// The caller's cgroup; "" (taken as an agent's) when it cannot be known to
// be the caller's: it exited, or its pid now names another process.
std::string caller_cgroup(const Caller& peer);

bool is_within(const std::string& path, const std::string& root);

// The groups of `have` that the gateway's keep_groups names; every other is dropped.
std::vector<gid_t> kept_groups(const std::vector<gid_t>& have, const std::vector<std::string>& keep);

// The run_as user of a gateway: uid, gid, home and groups from the user database.
Identity named_user(const std::string& name, const std::vector<std::string>& keep, const std::string& gateway);

// A user's home directory in the user database; "" when it has none.
std::string passwd_home(uid_t uid);

// /proc/PID/<entry> of the process that asked for the launch, opened and then checked to belong to it still (its
// pidfd): a recycled pid cannot lend another process's namespace or root.
UniqueFd open_of_caller(const Caller& peer, const char* entry, int flags);

// Where the launching user's root directory is, as a path the daemon can look up (globs of the filesystem
// section are expanded in their view): "" when their mount namespace is the daemon's. `root` keeps it open.
std::string caller_root(const Caller& peer, int caller_mounts, UniqueFd& root);

// The working directory tf run passed, as a path: its name is what the agent will be started in (and checked to be
// the same directory in the agent's view), and what relative filesystem entries are relative to.
std::string working_directory(int fd);

// The uid ranges of /etc/subuid and /etc/subgid: a dynamic uid inside one would share its number with a user
// namespace's processes and files.
std::vector<std::pair<std::uint64_t, std::uint64_t>> subordinate_ranges();

// The sockets no gateway may open to its agents: the daemon's own and the system bus. An entry that names one,
// or a directory holding one (also through a symbolic link, /var/run -> /run), is left out.
bool covers(const fs::path& entry, const std::vector<fs::path>& forbidden);

bool stripped(const std::string& variable, const std::vector<std::string>& patterns);

std::string random_suffix();

// The Java trust store beside the bundle (proxy/trust_store.h).
fs::path java_trust_store_for(const fs::path& bundle);

void write_bundle(const fs::path& file, const std::string& ca_pem);

// The agents' /etc/resolv.conf: a loopback resolver, so no query is even
// addressed to the host's; the BPF programs take port 53 to the stub anyway.
void write_resolv_conf(const fs::path& file);

// The mount namespace of the process that asked for the launch, when it is
// not the daemon's (a unit with ProtectHome=, PrivateTmp=, ProtectSystem=
// narrows the daemon's view): the agent gets a private copy of it, and so
// sees the machine as the user who ran tf run does. Invalid when the two are
// the same. The namespace is read from /proc/PID and then checked to belong
// to the caller still (its pidfd), so a recycled pid cannot lend another's.
UniqueFd caller_mount_namespace(const Caller& peer);

void reply(Descriptor& client, const json& message);

}  // namespace agents_detail

// This header is for the agents' own files only.
using namespace agents_detail;  // NOLINT(google-build-using-namespace)

struct Agent {
    std::string id;
    std::string gateway;
    std::string isolation;
    std::string command;
    std::vector<std::string> notes;  // what its filesystem section left out, told to tf run
    json filesystem;                 // its filesystem view (write, private_tmp, pins, protect, hide), told to tf run
    unsigned uid = 0;                // who launched it
    unsigned run_uid = 0;            // who it runs as
    bool dynamic_uid = false;
    std::optional<netns::Cgroup> cgroup;
    std::optional<netns::NetworkNamespace> ns;
    std::uint64_t key = 0;  // the cgroup id: the BPF registration and the proxy listener's tag
    std::optional<netns::Process> process;
    std::unique_ptr<Descriptor> exit_watch;
    // Protected names that did not exist at launch: moved aside when the agent makes them.
    std::unique_ptr<netns::ProtectedNameGuard> names;
    std::unique_ptr<Descriptor> names_watch;
    std::shared_ptr<Descriptor> client;  // tf run's connection
    bool registered = false;
    bool listening = false;
    bool enforced_unit = false;  // an existing cgroup put under a gateway (tf enforce), not launched by us
};

struct Agents::Impl {
    AgentsOptions options;
    const policy::ConfigStore& config;
    store::Store* store;
    bpf::Enforcer enforcer;
    proxy::DataPlane* proxy = nullptr;  // serves its listener and DNS stub
    net::io_context io{1};
    std::thread thread;
    std::unique_ptr<Descriptor> listener;
    std::map<std::string, std::shared_ptr<Agent>> agents;  // by id; io thread only
    // Who may launch and enforce (the control plane's one authorizer); an
    // agent is known by the cgroup of the caller's process, read through its pidfd.
    const control::Authorizer authorizer{control::RoleGroups{},
                                         [this](const Caller& peer) { return inside_agents(caller_cgroup(peer)); }};

    mutable std::mutex mutex;
    std::vector<AgentInfo> published;               // list(), under `mutex`
    std::vector<std::string> enforced_cgroups;      // relative paths, under `mutex`
    std::string root_cgroup;                        // options.cgroup_root, relative to the mount
    AgentObserver observer;                         // set before start
    netns::SandboxSupport support;                  // what this kernel gives agents' sandboxes
    netns::SeccompProgram seccomp;                  // the agents' filter, built once
    mutable std::set<std::string> ignored_entries;  // unix_sockets entries warned about; io thread only
    std::set<uid_t> dynamic_uids;                   // in use by running agents; io thread only
    std::vector<std::pair<std::uint64_t, std::uint64_t>> subordinate_uids;  // /etc/subuid, /etc/subgid

    Impl(AgentsOptions o, const policy::ConfigStore& c, store::Store* s)
        : options(std::move(o)),
          config(c),
          store(s),
          enforcer(bpf::EnforcerOptions{options.pin_dir, options.unix_socket_filter, netns::cgroup2_mount()}) {
        root_cgroup = relative_cgroup(options.cgroup_root);
        const auto hooks = enforcer.hooks();
        support.landlock_abi = netns::landlock_abi();
        support.landlock_missing = netns::landlock_missing_reason();
        support.unix_socket_filter = hooks.unix_sockets;
        support.bind_filter = hooks.bind;
        support.seccomp = netns::seccomp_available();
        if (support.seccomp) seccomp = netns::agent_seccomp_program();
        subordinate_uids = subordinate_ranges();
        if (options.dynamic_uid_first < 65536 || options.dynamic_uid_last < options.dynamic_uid_first) {
            throw std::invalid_argument("agents.dynamic_uids is not a range above 65535");
        }
    }

    // A free uid of the dynamic range: not an account, not a group, not a subordinate id, not another agent's.
    uid_t allocate_dynamic_uid() {
        static thread_local std::mt19937_64 generator{std::random_device{}()};
        const std::uint64_t size = std::uint64_t{options.dynamic_uid_last} - options.dynamic_uid_first + 1;
        const std::uint64_t start = generator() % size;
        for (std::uint64_t i = 0; i < size; ++i) {
            const auto uid = static_cast<uid_t>(options.dynamic_uid_first + (start + i) % size);
            if (dynamic_uids.count(uid) != 0 || !user_name(uid).empty() || group_exists(uid)) continue;
            if (std::any_of(subordinate_uids.begin(), subordinate_uids.end(),
                            [&](const auto& range) { return uid >= range.first && uid < range.second; })) {
                continue;
            }
            dynamic_uids.insert(uid);
            return uid;
        }
        throw LaunchError("no free uid is left in agents.dynamic_uids",
                          "widen agents.dynamic_uids in tameflared.json, or end some agents");
    }

    // Who `peer`'s agent on `gateway` runs as.
    Identity identity_for(const Caller& peer, const policy::Gateway& gateway) {
        if (peer.uid != 0) {
            Identity identity;
            identity.uid = peer.uid;
            identity.gid = peer.gid;
            identity.groups = kept_groups(peer.groups, gateway.keep_groups);
            return identity;
        }
        if (gateway.run_as == "root") {
            Identity identity;
            identity.groups = kept_groups(peer.groups, gateway.keep_groups);
            identity.user = "root";
            return identity;
        }
        if (gateway.run_as == "dynamic") {
            Identity identity;
            identity.uid = allocate_dynamic_uid();
            identity.gid = identity.uid;
            identity.home = "/";
            identity.dynamic = true;
            return identity;
        }
        return named_user(gateway.run_as, gateway.keep_groups, gateway.name);
    }

    // The gateway's unix_sockets as the BPF filter takes them, less the daemon's own sockets.
    bpf::UnixSocketPolicy unix_policy(const policy::Gateway& gateway, bool own_network, bool unit) const {
        bpf::UnixSocketPolicy policy;
        policy.any_abstract = own_network;
        std::vector<fs::path> forbidden = options.own_sockets;
        forbidden.push_back(options.launch_socket);
        for (const auto& entry : gateway.unix_sockets) {
            if (entry.rfind('@', 0) != 0 && covers(entry, forbidden)) {
                if (!ignored_entries.insert(gateway.name + "\n" + entry).second) continue;  // said once
                log(LogLevel::warning,
                    "gateway " + gateway.name + ": unix_sockets entry " + entry +
                        " covers a socket of tameflared or the system bus; it is ignored",
                    {{"GATEWAY", gateway.name}, {"HINT", "agents never reach the daemon's sockets or the system bus"}});
                continue;
            }
            policy.allow.push_back(entry);
        }
        // A service under enforcement still tells systemd it is ready.
        if (unit) policy.allow.insert(policy.allow.end(), {"/run/systemd/notify", "@/org/freedesktop/systemd1/notify"});
        return policy;
    }

    // The agent's unix socket list from its gateway as configured now (an unknown gateway: nothing is allowed).
    void apply_unix_policy(const Agent& agent) {
        if (!support.unix_socket_filter) return;
        const auto snapshot = config.snapshot();
        const policy::Gateway* gateway = snapshot->gateway(agent.gateway);
        try {
            enforcer.set_unix_policy(agent.key,
                                     gateway ? unix_policy(*gateway, agent.isolation == "netns", agent.enforced_unit)
                                             : bpf::UnixSocketPolicy{{}, agent.isolation == "netns"});
        } catch (const std::exception& error) {
            // The list it had stays (or none: everything refused); the configuration was checked at load.
            log(LogLevel::error, "cannot set the unix socket list of agent " + agent.id + ": " + error.what(),
                {{"AGENT", agent.id}, {"GATEWAY", agent.gateway}});
        }
    }

    // Without the unix socket filter: the sockets of services outside that agents are known to misuse, hidden in
    // the agent's mount namespace (docs/enforcement.md, "Fallbacks").
    void hide_service_sockets(netns::SpawnOptions& spawn, const std::vector<std::string>& allow, const Caller& peer,
                              uid_t agent, const std::vector<std::string>& env) const {
        const uid_t caller = peer.uid;
        const auto allowed = [&](const std::string& path) {
            return std::find(allow.begin(), allow.end(), path) != allow.end();
        };
        std::vector<std::string> directories{"/run/user/" + std::to_string(caller),
                                             "/run/user/" + std::to_string(agent), "/run/screen", "/tmp/.X11-unix",
                                             "/tmp/.ICE-unix"};
        // The caller's own runtime directory where it is elsewhere, but only in the places such directories live:
        // the variable is the caller's to set, and these mounts are made as root.
        for (const auto& variable : env) {
            if (variable.rfind("XDG_RUNTIME_DIR=", 0) != 0) continue;
            const std::string directory = variable.substr(16);
            if ((directory.rfind("/run/user/", 0) == 0 || directory.rfind("/tmp/", 0) == 0) &&
                (directory + "/").find("/../") == std::string::npos) {
                directories.push_back(directory);
            }
        }
        // tmux's sockets as the caller sees /tmp (the daemon's own /tmp may be private to it).
        const std::string root = "/proc/" + std::to_string(peer.pid) + "/root";
        glob_t found{};
        if (::glob((root + "/tmp/tmux-*").c_str(), GLOB_NOSORT | GLOB_ONLYDIR, nullptr, &found) == 0) {
            for (std::size_t i = 0; i < found.gl_pathc; ++i) directories.emplace_back(found.gl_pathv[i] + root.size());
        }
        ::globfree(&found);
        for (auto& directory : directories) {
            if (!directory.empty() && !allowed(directory + "/")) spawn.hide.push_back(std::move(directory));
        }
        std::vector<std::string> files{"/run/docker.sock",
                                       "/var/run/docker.sock",
                                       "/run/podman/podman.sock",
                                       "/run/containerd/containerd.sock",
                                       "/run/dbus/system_bus_socket",
                                       "/var/run/dbus/system_bus_socket",
                                       "/run/systemd/private",
                                       "/run/systemd/io.system.ManagedOOM",
                                       options.launch_socket.string()};
        for (const auto& socket : options.own_sockets) files.push_back(socket.string());
        for (auto& file : files) {
            if (!allowed(file)) spawn.mask.push_back(std::move(file));
        }
    }

    [[nodiscard]] fs::path resolv_conf() const { return options.ca_bundle.parent_path() / "resolv.conf"; }

    void publish() {
        std::vector<AgentInfo> out;
        std::vector<std::string> enforced;
        for (const auto& [id, agent] : agents) {
            out.push_back(info(*agent));
            if (agent->enforced_unit && agent->cgroup) enforced.push_back(relative_cgroup(agent->cgroup->path()));
        }
        std::lock_guard lock(mutex);
        published = std::move(out);
        enforced_cgroups = std::move(enforced);
    }

    static AgentInfo info(const Agent& agent) {
        AgentInfo out{
            agent.id,  agent.gateway, agent.isolation, agent.key,          agent.process ? agent.process->pid() : 0,
            agent.uid, agent.run_uid, agent.command,   agent.enforced_unit};
        return out;
    }
    static std::string relative_cgroup(const fs::path& path) {
        return "/" + path.lexically_relative(netns::cgroup2_mount()).string();
    }

    net::awaitable<void> accept_loop();
    net::awaitable<void> serve(std::shared_ptr<Descriptor> client);
    net::awaitable<void> watch_exit(std::shared_ptr<Agent> agent);
    std::shared_ptr<Agent> launch(const Caller& peer, const json& request, std::vector<UniqueFd>& fds);
    void finish(Agent& agent, int status);
    void undo(Agent& agent);
    void undo_registration(Agent& agent);
    void serve_agent(Agent& agent, UniqueFd proxy_socket, UniqueFd dns_udp, UniqueFd dns_tcp);
    void adopt_running();
    json enforce(const Caller& peer, const json& request);
    void forget_vanished_units();
    json release(const Caller& peer, const json& request);
    void start_enforcing(const fs::path& cgroup, const std::string& gateway, const std::string& name);
    void save_enforced();
    void restore_enforced();
    [[nodiscard]] bool inside_agents(const std::string& cgroup) const;
    void adopt(const fs::path& directory, const std::map<std::uint64_t, bpf::AgentRoute>& routes);
    net::awaitable<void> watch_cgroup(std::shared_ptr<Agent> agent);
    net::awaitable<void> watch_names(std::shared_ptr<Agent> agent);
    void sweep_names(Agent& agent);
};

}  // namespace tameflare::daemon
