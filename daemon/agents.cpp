#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "daemon/agents.h"

#include "bpf/enforcer.h"
#include "common/atomic_file.h"
#include "common/log.h"
#include "common/text.h"
#include "common/users.h"
#include "daemon/agent_environment.h"
#include "daemon/dns/dns_stub.h"
#include "daemon/proxy/asio.h"
#include "daemon/proxy/liveness.h"
#include "daemon/proxy/server.h"
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
namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;
using error_code = boost::system::error_code;
using Descriptor = net::posix::stream_descriptor;
using nlohmann::json;

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

bool valid_name(const std::string& name) {
    return is_name(name, 48, Letters::lower, "-_") && name.front() != '-';
}

// The caller's cgroup; "" (taken as an agent's) when it cannot be known to
// be the caller's: it exited, or its pid now names another process.
std::string caller_cgroup(const Caller& peer) {
    return netns::process_cgroup(peer.pid, peer.pidfd());
}

bool is_within(const std::string& path, const std::string& root) {
    return path == root || (path.size() > root.size() && path.rfind(root, 0) == 0 && path[root.size()] == '/');
}

bool may_launch(const Caller& peer, const policy::Gateway& gateway) {
    if (peer.uid == 0) return true;
    const std::string user = user_name(peer.uid);
    if (!user.empty() &&
        std::find(gateway.launch_users.begin(), gateway.launch_users.end(), user) != gateway.launch_users.end()) {
        return true;
    }
    for (const auto& name : gateway.launch_groups) {
        const auto gid = group_id(name);
        if (!gid) continue;
        if (*gid == peer.gid || std::find(peer.groups.begin(), peer.groups.end(), *gid) != peer.groups.end()) {
            return true;
        }
    }
    return false;
}

// The traffic record of a name an agent's DNS stub saw that its gateway's
// policy does not list: "would_deny" where it was answered (monitor, soft),
// "denied" where refused.
proxy::TrafficRecord dns_record(const std::string& gateway, const std::string& agent, const dns::UnlistedName& name) {
    proxy::TrafficRecord record;
    record.time = std::chrono::system_clock::now();
    record.gateway = gateway;
    record.agent = agent;
    record.connector = "dns";
    record.action = "dns.query";
    record.method = name.type == dns::kTypeA      ? "A"
                    : name.type == dns::kTypeAaaa ? "AAAA"
                                                  : "TYPE" + std::to_string(name.type);
    record.host = name.name;
    record.decision = name.answered ? "would_deny" : "denied";
    record.reason = name.answered ? "no connector or tcp rule of gateway " + gateway +
                                        " lists this name: answered (not enforced at this level)"
                                  : "no connector or tcp rule of gateway " + gateway + " lists this name: REFUSED";
    if (name.suppressed != 0) {
        record.reason += "; " + std::to_string(name.suppressed) + " more unlisted queries were not recorded (budget)";
    }
    record.forwarded = name.answered;
    return record;
}

// The names an agent of `gateway` may resolve: its connectors' domains and
// the host names of its raw TCP rules.
std::vector<std::string> resolvable_names(const policy::Gateway& gateway) {
    std::vector<std::string> names;
    for (const auto& connector : gateway.connectors) {
        names.insert(names.end(), connector.domains.begin(), connector.domains.end());
    }
    for (const auto& rule : gateway.tcp) {
        if (!rule.host.empty()) names.push_back(rule.host);
    }
    return names;
}

// Who an agent runs as (docs/enforcement.md, "Who").
struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    std::string user;  // "" for a dynamic uid or the caller's own
    std::string home;
    bool dynamic = false;
};

// The groups of `have` that the gateway's keep_groups names; every other is dropped.
std::vector<gid_t> kept_groups(const std::vector<gid_t>& have, const std::vector<std::string>& keep) {
    std::vector<gid_t> out;
    for (const auto& name : keep) {
        const auto gid = group_id(name);
        if (gid && std::find(have.begin(), have.end(), *gid) != have.end() &&
            std::find(out.begin(), out.end(), *gid) == out.end()) {
            out.push_back(*gid);
        }
    }
    return out;
}

// The run_as user of a gateway: uid, gid, home and groups from the user database.
Identity named_user(const std::string& name, const std::vector<std::string>& keep, const std::string& gateway) {
    const auto entry = user_by_name(name);
    if (!entry) {
        throw LaunchError("gateway " + gateway + " runs root's agents as user \"" + name + "\", which does not exist",
                          "create the user (adduser --system " + name + ") or change run_as in the gateway's file");
    }
    Identity identity;
    identity.uid = entry->uid;
    identity.gid = entry->gid;
    identity.user = entry->name;
    identity.home = entry->home;
    identity.groups = kept_groups(user_groups(*entry), keep);
    return identity;
}

// A user's home directory in the user database; "" when it has none.
std::string passwd_home(uid_t uid) {
    const auto entry = user_by_id(uid);
    return entry ? entry->home : std::string();
}

// /proc/PID/<entry> of the process that asked for the launch, opened and then checked to belong to it still (its
// pidfd): a recycled pid cannot lend another process's namespace or root.
UniqueFd open_of_caller(const Caller& peer, const char* entry, int flags) {
    UniqueFd pidfd;
    int check = peer.pidfd();
    if (check < 0) {
        pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, peer.pid, 0)));
        check = pidfd.get();
    }
    UniqueFd fd(::open(("/proc/" + std::to_string(peer.pid) + "/" + entry).c_str(), flags));
    if (!fd || check < 0 || ::syscall(SYS_pidfd_send_signal, check, 0, nullptr, 0) != 0) {
        throw LaunchError("the process that asked for the launch is gone", "");
    }
    return fd;
}

// Where the launching user's root directory is, as a path the daemon can look up (globs of the filesystem
// section are expanded in their view): "" when their mount namespace is the daemon's. `root` keeps it open.
std::string caller_root(const Caller& peer, int caller_mounts, UniqueFd& root) {
    if (caller_mounts < 0) return {};
    root = open_of_caller(peer, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
    return "/proc/self/fd/" + std::to_string(root.get());
}

// The working directory tf run passed, as a path: its name is what the agent will be started in (and checked to be
// the same directory in the agent's view), and what relative filesystem entries are relative to.
std::string working_directory(int fd) {
    std::array<char, 4096> buffer{};
    const ssize_t length = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buffer.data(), buffer.size());
    std::string path(buffer.data(), length > 0 ? static_cast<std::size_t>(length) : 0);
    struct stat info {};
    if (length <= 0 || static_cast<std::size_t>(length) >= buffer.size() || !path.starts_with("/") ||
        ::fstat(fd, &info) != 0 || !S_ISDIR(info.st_mode) || info.st_nlink == 0) {
        throw LaunchError("the working directory has no path (was it removed?)", "cd into an existing directory");
    }
    return path;
}

// The uid ranges of /etc/subuid and /etc/subgid: a dynamic uid inside one would share its number with a user
// namespace's processes and files.
std::vector<std::pair<std::uint64_t, std::uint64_t>> subordinate_ranges() {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const char* file : {"/etc/subuid", "/etc/subgid"}) {
        std::ifstream in(file);
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            std::string owner;
            std::string start;
            std::string count;
            if (!std::getline(fields, owner, ':') || !std::getline(fields, start, ':') ||
                !std::getline(fields, count)) {
                continue;
            }
            try {
                const std::uint64_t first = std::stoull(start);
                ranges.emplace_back(first, first + std::stoull(count));
            } catch (const std::exception&) {
                // not a range: nothing to avoid
            }
        }
    }
    return ranges;
}

// The sockets no gateway may open to its agents: the daemon's own and the system bus. An entry that names one,
// or a directory holding one (also through a symbolic link, /var/run -> /run), is left out.
bool covers(const fs::path& entry, const std::vector<fs::path>& forbidden) {
    std::error_code error;
    const std::string text = entry.string();
    const bool directory = !text.empty() && text.back() == '/';
    const fs::path canonical = fs::weakly_canonical(entry, error);
    for (const auto& socket : forbidden) {
        const fs::path target = fs::weakly_canonical(socket, error);
        if (!directory) {
            if (canonical == target || entry == socket) return true;
            continue;
        }
        const std::string root = canonical.string() + (canonical.string().ends_with("/") ? "" : "/");
        if (target.string().rfind(root, 0) == 0 || socket.string().rfind(text, 0) == 0) return true;
    }
    return false;
}

bool stripped(const std::string& variable, const std::vector<std::string>& patterns) {
    const std::string name = variable.substr(0, variable.find('='));
    static constexpr std::array<std::string_view, 8> kProxyVariables{
        "http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"};
    if (std::find(kProxyVariables.begin(), kProxyVariables.end(), name) != kProxyVariables.end()) return true;
    if (std::find(kBundleVariables.begin(), kBundleVariables.end(), name) != kBundleVariables.end()) return true;
    if (name.rfind("TAMEFLARE_", 0) == 0) return true;
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& pattern) { return fnmatch(pattern.c_str(), name.c_str(), 0) == 0; });
}

std::string random_suffix() {
    static thread_local std::mt19937_64 generator{std::random_device{}()};
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 6; ++i) out += kDigits[generator() % 16];
    return out;
}

// The Java trust store beside the bundle (proxy/trust_store.h).
fs::path java_trust_store_for(const fs::path& bundle) {
    return bundle.parent_path() / "ca-trust.p12";
}

void write_bundle(const fs::path& file, const std::string& ca_pem) {
    std::string bundle;
    for (const auto& path : kBundlePaths) {
        std::ifstream in{std::string(path)};
        if (!in) continue;
        bundle.assign(std::istreambuf_iterator<char>(in), {});
        break;
    }
    if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
    bundle += ca_pem;
    std::error_code error;
    fs::create_directories(file.parent_path(), error);
    // Each file whole or not at all (readers of the old one keep it), world-readable.
    const AtomicFileOptions options{.mode = 0644, .take_over_temporary = true};
    write_file_atomically(file, bundle, options);
    write_file_atomically(java_trust_store_for(file), proxy::java_trust_store(bundle), options);
}

// The agents' /etc/resolv.conf: a loopback resolver, so no query is even
// addressed to the host's; the BPF programs take port 53 to the stub anyway.
void write_resolv_conf(const fs::path& file) {
    write_file_atomically(
        file, "# tameflared: every query goes to the agent's DNS stub\nnameserver 127.0.0.53\noptions edns0\n",
        {.mode = 0644, .take_over_temporary = true});
}

}  // namespace

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
    std::unique_ptr<dns::DnsStub> dns;
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

namespace {

// The mount namespace of the process that asked for the launch, when it is
// not the daemon's (a unit with ProtectHome=, PrivateTmp=, ProtectSystem=
// narrows the daemon's view): the agent gets a private copy of it, and so
// sees the machine as the user who ran tf run does. Invalid when the two are
// the same. The namespace is read from /proc/PID and then checked to belong
// to the caller still (its pidfd), so a recycled pid cannot lend another's.
UniqueFd caller_mount_namespace(const Caller& peer) {
    struct stat own {};
    struct stat theirs {};
    if (::stat("/proc/self/ns/mnt", &own) != 0) return {};
    UniqueFd fd = open_of_caller(peer, "ns/mnt", O_RDONLY | O_CLOEXEC);
    if (::fstat(fd.get(), &theirs) != 0 || (own.st_dev == theirs.st_dev && own.st_ino == theirs.st_ino)) return {};
    return fd;
}

}  // namespace

struct Agents::Impl {
    AgentsOptions options;
    const policy::ConfigStore& config;
    store::Store* store;
    bpf::Enforcer enforcer;
    proxy::ProxyServer* proxy = nullptr;
    net::io_context io{1};
    std::thread thread;
    std::unique_ptr<Descriptor> listener;
    std::map<std::string, std::shared_ptr<Agent>> agents;  // by id; io thread only

    struct Registration {
        std::string gateway;
        std::string agent;
    };
    mutable std::mutex mutex;
    std::map<std::uint64_t, Registration> registrations;  // by cgroup id; any thread
    std::vector<AgentInfo> published;                     // list(), under `mutex`
    std::vector<std::string> enforced_cgroups;            // relative paths, under `mutex`
    std::string root_cgroup;                              // options.cgroup_root, relative to the mount
    AgentObserver observer;                               // set before start
    netns::SandboxSupport support;                        // what this kernel gives agents' sandboxes
    netns::SeccompProgram seccomp;                        // the agents' filter, built once
    mutable std::set<std::string> ignored_entries;        // unix_sockets entries warned about; io thread only
    std::set<uid_t> dynamic_uids;                         // in use by running agents; io thread only
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

namespace {

void reply(Descriptor& client, const json& message) {
    try {
        netns::send_message(client.native_handle(), message.dump());
    } catch (const std::exception&) {
        // tf run went away; its agent is ended when the read side sees it
    }
}

}  // namespace

// One piece over 100 lines: the launch's steps in their order (identity, cgroup, namespaces, listeners, spawn), each
// undone by the RAII guards it holds; issue 23 item 4 moves it into a launcher of its own.
// NOLINTNEXTLINE(readability-function-size)
std::shared_ptr<Agent> Agents::Impl::launch(const Caller& peer, const json& request, std::vector<UniqueFd>& fds) {
    if (fds.size() != 4) throw LaunchError("a launch passes 4 descriptors (stdin, stdout, stderr, cwd)", "use tf run");
    if (inside_agents(caller_cgroup(peer))) {
        throw LaunchError("agents cannot launch agents", "run tf run outside any agent");
    }
    const auto argv_json = request.value("argv", json::array());
    const auto env_json = request.value("env", json::array());
    if (!argv_json.is_array() || argv_json.empty() || !env_json.is_array()) {
        throw LaunchError("the launch request has no command", "tf run --gateway G -- COMMAND [ARGS...]");
    }
    const std::string gateway_name = request.value("gateway", "");
    const auto snapshot = config.snapshot();
    const policy::Gateway* gateway = snapshot->gateway(gateway_name);
    if (gateway == nullptr) {
        std::string known;
        for (const auto& [name, value] : snapshot->gateways) known += (known.empty() ? "" : ", ") + name;
        throw LaunchError("unknown gateway \"" + gateway_name + "\"", "configured gateways: " + known);
    }
    if (!may_launch(peer, *gateway)) {
        throw LaunchError("user " + std::to_string(peer.uid) + " may not launch agents on gateway " + gateway_name,
                          "an administrator adds the user or a group of it to \"launch\" in the gateway's file");
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
    if (peer.uid != 0) throw LaunchError("only root may put a cgroup under enforcement", "run tf enforce as root");
    if (inside_agents(caller_cgroup(peer))) throw LaunchError("agents cannot change enforcement", "");
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
    if (peer.uid != 0) throw LaunchError("only root may release a cgroup from enforcement", "");
    if (inside_agents(caller_cgroup(peer))) throw LaunchError("agents cannot change enforcement", "");
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

// Registers the agent for origin look-ups and serves its listener and DNS
// stub. The BPF registration is the caller's.
void Agents::Impl::serve_agent(Agent& agent, UniqueFd proxy_socket, UniqueFd dns_udp, UniqueFd dns_tcp) {
    {
        std::lock_guard lock(mutex);
        registrations[agent.key] = Registration{agent.gateway, agent.id};
    }
    agent.registered = true;
    proxy->add_listener(std::move(proxy_socket), agent.key);
    agent.listening = true;
    const auto snapshot = config.snapshot();
    const policy::Gateway* gateway = snapshot->gateway(agent.gateway);
    agent.dns = std::make_unique<dns::DnsStub>(io, std::move(dns_udp), std::move(dns_tcp),
                                               gateway ? resolvable_names(*gateway) : std::vector<std::string>{},
                                               proxy->resolver());
    agent.dns->set_answer_unlisted(gateway != nullptr && gateway->enforcement != policy::Enforcement::full);
    agent.dns->on_unlisted([server = proxy, gateway = agent.gateway, id = agent.id](const dns::UnlistedName& name) {
        server->record(dns_record(gateway, id, name));
    });
    agent.dns->start();
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
    if (agent.dns) agent.dns->stop();
    agent.dns.reset();
    if (agent.listening) proxy->remove_listener(agent.key);
    agent.listening = false;
    if (agent.registered) enforcer.remove_agent(agent.key);
    agent.registered = false;
    std::lock_guard lock(mutex);
    registrations.erase(agent.key);
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

net::awaitable<void> Agents::Impl::serve(std::shared_ptr<Descriptor> client) {
    std::shared_ptr<Agent> agent;
    for (;;) {
        error_code error;
        co_await client->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error) break;
        std::optional<netns::Message> message;
        try {
            message = netns::receive_message(client->native_handle());
        } catch (const std::system_error& failure) {
            if (failure.code() == std::errc::resource_unavailable_try_again) continue;
            break;
        } catch (const std::exception& failure) {
            reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", "use tf run"}});
            break;
        }
        if (!message) break;  // tf run is gone
        // Whatever tf run (or anyone) sends: a field of the wrong type is an
        // error answered to the sender, never an exception that ends the daemon.
        bool done = false;
        try {
            const json request = json::parse(message->text, nullptr, false);
            const std::string type = request.is_object() ? request.value("type", "") : "";
            if (type == "launch" && !agent) {
                try {
                    const auto peer = peer_credentials(client->native_handle());
                    agent = launch(peer, request, message->fds);
                    agent->client = client;
                    reply(*client, json{{"type", "started"},
                                        {"agent", agent->id},
                                        {"pid", agent->process->pid()},
                                        {"notes", agent->notes},
                                        {"filesystem", agent->filesystem}});
                    agent->exit_watch = std::make_unique<Descriptor>(io, ::dup(agent->process->pidfd()));
                    net::co_spawn(io, watch_exit(agent), net::detached);
                } catch (const LaunchError& failure) {
                    log(LogLevel::warning, std::string("launch refused: ") + failure.what(),
                        {{"GATEWAY", request.value("gateway", "")}, {"HINT", failure.hint()}});
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", failure.hint()}});
                    done = true;
                }
            } else if ((type == "enforce" || type == "release") && !agent) {
                try {
                    const auto peer = peer_credentials(client->native_handle());
                    reply(*client, type == "enforce" ? enforce(peer, request) : release(peer, request));
                } catch (const json::exception& failure) {
                    reply(*client, json{{"type", "error"},
                                        {"message", std::string("malformed request: ") + failure.what()},
                                        {"hint", "use tf enforce"}});
                } catch (const LaunchError& failure) {
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", failure.hint()}});
                } catch (const std::exception& failure) {
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", ""}});
                }
                done = true;
            } else if (type == "signal" && agent && agent->process) {
                const int number = request.value("signal", 0);
                if (std::find(kForwardable.begin(), kForwardable.end(), number) != kForwardable.end()) {
                    agent->process->signal(number);
                }
            } else {
                reply(*client, json{{"type", "error"}, {"message", "unexpected message"}, {"hint", "use tf run"}});
                done = true;
            }
        } catch (const std::exception& failure) {
            reply(*client, json{{"type", "error"},
                                {"message", std::string("malformed request: ") + failure.what()},
                                {"hint", "use tf run"}});
            done = true;
        }
        if (done) break;
    }
    // tf run went away (killed, or the terminal closed): its agent ends too.
    if (agent && agent->client == client && agents.count(agent->id) != 0) {
        agent->client.reset();
        if (agent->cgroup) agent->cgroup->kill();
    }
    error_code ignored;
    client->close(ignored);
}

net::awaitable<void> Agents::Impl::accept_loop() {
    for (;;) {
        error_code error;
        co_await listener->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error) co_return;
        const int fd = ::accept4(listener->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                net::steady_timer pause(io, std::chrono::milliseconds(100));  // out of descriptors: do not spin
                co_await pause.async_wait(net::redirect_error(net::use_awaitable, error));
            }
            continue;
        }
        auto client = std::make_shared<Descriptor>(io, fd);
        net::co_spawn(io, serve(client), net::detached);
    }
}

Agents::Agents(AgentsOptions options, const policy::ConfigStore& config, store::Store* store)
    : impl_(std::make_unique<Impl>(std::move(options), config, store)) {
    const auto& root = impl_->options.cgroup_root;
    const std::string own = netns::own_cgroup().string();
    if (is_within(own, root.string())) {
        throw std::runtime_error("tameflared runs inside its own agents' cgroup root " + root.string() +
                                 "; its connections would be redirected. Set agents.cgroup_root elsewhere");
    }
    netns::ensure_cgroup(root);
    impl_->enforcer.enforce(root);
    write_bundle(impl_->options.ca_bundle, impl_->options.ca_certificate_pem);
    write_resolv_conf(impl_->resolv_conf());
}

Agents::~Agents() {
    stop();
}

void Agents::start(proxy::ProxyServer& proxy) {
    impl_->proxy = &proxy;
    const auto& path = impl_->options.launch_socket;
    std::error_code error;
    fs::create_directories(path.parent_path(), error);
    ::chmod(path.parent_path().c_str(), 0755);
    fs::remove(path, error);
    UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof address.sun_path) {
        throw std::runtime_error("launch socket path too long: " + path.string());
    }
    std::memcpy(address.sun_path, path.c_str(), path.string().size());
    if (!socket || ::bind(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(socket.get(), 64) != 0) {
        throw std::system_error(errno, std::generic_category(), "cannot listen on the launch socket " + path.string());
    }
    // Anyone may ask; the daemon decides by the caller's kernel credentials.
    ::chmod(path.c_str(), 0666);
    impl_->listener = std::make_unique<Descriptor>(impl_->io, socket.release());
    net::co_spawn(impl_->io, impl_->accept_loop(), net::detached);
    net::post(impl_->io, [this] { impl_->adopt_running(); });
    impl_->thread = std::thread([this] {
        auto guard = net::make_work_guard(impl_->io);
        impl_->io.run();
    });
}

void Agents::stop() {
    if (!impl_->thread.joinable()) return;
    std::promise<void> done;
    net::post(impl_->io, [this, &done] {
        error_code ignored;
        if (impl_->listener) impl_->listener->close(ignored);
        auto running = impl_->agents;
        for (auto& [id, agent] : running) {
            if (agent->enforced_unit) {  // a service's cgroup is not ours to end: its connects fail until we are back
                impl_->undo_registration(*agent);
                continue;
            }
            if (agent->exit_watch) agent->exit_watch->cancel(ignored);
            if (agent->cgroup) agent->cgroup->kill();
            const int status = agent->process ? agent->process->wait() : 255;
            impl_->finish(*agent, status);
        }
        done.set_value();
    });
    done.get_future().wait();
    impl_->io.stop();
    impl_->thread.join();
}

bool Agents::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->thread.joinable()) return true;
    boost::asio::io_context* loop = &impl_->io;
    return proxy::loops_answer(std::span(&loop, 1), timeout);
}

void Agents::reload() {
    if (!impl_->thread.joinable()) return;
    net::post(impl_->io, [this] {
        const auto snapshot = impl_->config.snapshot();
        for (auto& [id, agent] : impl_->agents) {
            const policy::Gateway* gateway = snapshot->gateway(agent->gateway);
            if (agent->dns) {
                agent->dns->set_allowed(gateway ? resolvable_names(*gateway) : std::vector<std::string>{});
                agent->dns->set_answer_unlisted(gateway != nullptr &&
                                                gateway->enforcement != policy::Enforcement::full);
            }
            impl_->apply_unix_policy(*agent);
        }
    });
}

std::optional<proxy::Origin> Agents::lookup(const proxy::AcceptedConnection& connection) {
    const auto origin = impl_->enforcer.origin(netns::socket_netns_cookie(connection.socket), connection.client);
    if (!origin || connection.listener != origin->agent) return std::nullopt;
    std::lock_guard lock(impl_->mutex);
    const auto found = impl_->registrations.find(origin->agent);
    if (found == impl_->registrations.end()) return std::nullopt;
    return proxy::Origin{origin->destination, found->second.gateway, found->second.agent};
}

std::vector<AgentInfo> Agents::list() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->published;
}

bool Agents::is_agent_cgroup(const std::string& cgroup) const {
    return impl_->inside_agents(cgroup);
}

Agents::StopResult Agents::stop_agent(const std::string& id) {
    if (!impl_->thread.joinable()) return StopResult::unknown;
    std::promise<StopResult> result;
    net::post(impl_->io, [this, &id, &result] {
        const auto found = impl_->agents.find(id);
        if (found == impl_->agents.end()) {
            result.set_value(StopResult::unknown);
        } else if (found->second->enforced_unit) {
            result.set_value(StopResult::enforced_unit);
        } else {
            // The exit watch sees the end and reports it as for any other exit.
            if (found->second->cgroup) found->second->cgroup->kill();
            result.set_value(StopResult::stopped);
        }
    });
    return result.get_future().get();
}

std::string Agents::launch(const Caller& peer, const json& request, std::vector<UniqueFd> fds) {
    if (!impl_->thread.joinable()) throw LaunchError("tameflared is not launching agents now", "");
    std::promise<std::string> result;
    net::post(impl_->io, [this, &peer, &request, &fds, &result] {
        // Whatever the request holds: a field of the wrong type is a refusal, not an escape.
        try {
            const auto agent = impl_->launch(peer, request, fds);
            agent->exit_watch = std::make_unique<Descriptor>(impl_->io, ::dup(agent->process->pidfd()));
            net::co_spawn(impl_->io, impl_->watch_exit(agent), net::detached);
            result.set_value(agent->id);
        } catch (const json::exception& failure) {
            result.set_exception(
                std::make_exception_ptr(LaunchError(std::string("malformed launch request: ") + failure.what(), "")));
        } catch (...) {
            result.set_exception(std::current_exception());
        }
    });
    return result.get_future().get();
}

void Agents::on_event(AgentObserver observer) {
    impl_->observer = std::move(observer);
}

fs::path default_cgroup_root() {
    return netns::cgroup2_mount() / "tameflare";
}

}  // namespace tameflare::daemon
