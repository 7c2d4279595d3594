#include "daemon/supervisor.h"

#include "common/log.h"
#include "common/users.h"
#include "daemon/agents.h"
#include "daemon/api/api_server.h"
#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/control/kill_switch.h"
#include "daemon/control/metrics.h"
#include "daemon/dataplane/remote_plane.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "daemon/store_services.h"
#include "dbus/bus_service.h"
#include "netns/cgroup.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <thread>
#include <utility>

namespace tameflare::daemon {

namespace {

// The main loop's tick: STATUS= for systemctl status, and WATCHDOG=1 when
// the unit has WatchdogSec= (sd_watchdog_enabled).
struct Heartbeat {
    bool watchdog = false;
    std::chrono::microseconds period{std::chrono::seconds(5)};

    Heartbeat() {
        std::uint64_t usec = 0;
        if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
            watchdog = true;
            // Three feeds per period: one missed tick is not a restart.
            period = std::min(period, std::chrono::microseconds(usec / 3));
        }
    }
    [[nodiscard]] timespec interval() const {
        const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(period);
        const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(period - seconds);
        return timespec{static_cast<time_t>(seconds.count()), static_cast<long>(nanoseconds.count())};
    }
    [[nodiscard]] std::chrono::milliseconds probe_timeout() const {
        return std::max(std::chrono::milliseconds(10),
                        std::chrono::duration_cast<std::chrono::milliseconds>(period / 2));
    }
};

// SIGTERM: no new connections; every held request is denied with a reason
// (the agent gets its 403 and the log its row) before connections close.
void drain(proxy::DataPlane& server, proxy::ApprovalQueue& queue) {
    server.stop_accepting();
    const auto denied = queue.deny_if([](const proxy::ApprovalRequest&) { return true; },
                                      "tameflared is stopping; ask again when it is back");
    if (denied != 0) {
        log(LogLevel::notice, std::to_string(denied) + " held requests denied: tameflared is stopping",
            {{"MESSAGE_ID", message_id::approval}, {"DECISION", "deny"}});
    }
    // Their answers are written on the proxy's threads; a few seconds at most.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (server.counters().held != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// What the agents are given: where their cgroups and pins are, the launch
// socket, the CA they trust, what they must not see or reach.
AgentsOptions agents_options(const DaemonConfig& config, const proxy::CertificateAuthority& ca, bool& delegated) {
    AgentsOptions options;
    options.cgroup_root = config.agents.cgroup_root;
    if (options.cgroup_root.empty()) {
        // Under systemd with Delegate=yes: <unit cgroup>/agents, the daemon in <unit cgroup>/daemon.
        const auto unit = netns::adopt_delegated_cgroup();
        delegated = unit.has_value();
        options.cgroup_root = unit ? *unit : default_cgroup_root();
    }
    options.pin_dir = config.agents.bpf_pin_dir;
    options.launch_socket =
        config.agents.launch_socket.empty() ? config.runtime_dir / "launch.sock" : config.agents.launch_socket;
    options.ca_bundle = config.runtime_dir / "ca-bundle.pem";
    options.ca_certificate_pem = ca.certificate_pem();
    options.default_isolation = config.agents.isolation;
    options.hidden = {config.state_dir, config.agents.bpf_pin_dir.parent_path()};
    options.own_sockets = {config.api_socket_path(), "/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket"};
    // A bus of its own (tests, containers): "unix:path=/x/y[,guid=...]".
    std::string bus = config.dbus.address;
    if (const char* variable = std::getenv("DBUS_SYSTEM_BUS_ADDRESS"); bus.empty() && variable != nullptr) {
        bus = variable;
    }
    if (const auto at = bus.find("unix:path="); at != std::string::npos) {
        const auto start = at + 10;
        options.own_sockets.emplace_back(bus.substr(start, bus.find_first_of(",;", start) - start));
    }
    options.dynamic_uid_first = config.agents.dynamic_uid_first;
    options.dynamic_uid_last = config.agents.dynamic_uid_last;
    options.unix_socket_filter = config.agents.unix_socket_filter;
    return options;
}

// What the data plane may read (Landlock): the trust store, the resolver's
// files and the shared libraries getaddrinfo loads. The upstream CA file
// comes as a descriptor.
std::vector<std::string> dataplane_readable() {
    std::vector<std::string> paths{"/etc/ssl",
                                   "/usr/share/ca-certificates",
                                   "/usr/lib/ssl",
                                   "/etc/hosts",
                                   "/etc/resolv.conf",
                                   "/run/systemd/resolve",
                                   "/etc/nsswitch.conf",
                                   "/etc/gai.conf",
                                   "/etc/host.conf",
                                   "/etc/services",
                                   "/etc/protocols",
                                   "/etc/ld.so.cache",
                                   "/usr/lib",
                                   "/lib",
                                   "/lib64"};
    return paths;
}

// The data plane's binary: configured, or beside tameflared (a build tree),
// or where the package installs it relative to tameflared (<prefix>/sbin and
// <prefix>/libexec/tameflare, whatever the prefix).
std::filesystem::path dataplane_binary(const DaemonConfig& config) {
    if (!config.dataplane.binary.empty()) return config.dataplane.binary;
    std::error_code error;
    const auto directory = std::filesystem::read_symlink("/proc/self/exe", error).parent_path();
    auto beside = directory / "tameflare-dataplane";
    if (!error && std::filesystem::exists(beside, error)) return beside;
    return (directory / TF_LIBEXEC_FROM_SBIN / "tameflare-dataplane").lexically_normal();
}

}  // namespace

std::string summary(const policy::Config& config) {
    std::string text = std::to_string(config.connectors.size()) + " connectors, " +
                       std::to_string(config.gateways.size()) + " gateways";
    for (const auto& [name, gateway] : config.gateways) {
        text += "\n  gateway " + name + ": enforcement " + std::string(policy::to_string(gateway->enforcement)) + ", " +
                std::to_string(gateway->connectors.size()) + " connectors, " +
                std::to_string(gateway->policies.size()) + " policies";
    }
    return text;
}

struct Supervisor::Bindings {
    Bindings(store::Store& database, store::Vault& vault)
        : recorded_approvals(queue, database),
          approvals(recorded_approvals, events),
          stored_traffic(database),
          traffic(stored_traffic, events),
          credentials(vault) {}

    control::EventHub events;
    proxy::ApprovalQueue queue;  // where held requests wait for an answer
    RecordedApprovals recorded_approvals;
    control::ObservedApprovals approvals;  // the proxy's ApprovalBroker
    StoreTrafficSink stored_traffic;
    control::Metrics traffic;  // the proxy's TrafficSink
    VaultCredentials credentials;
};

Supervisor::Supervisor(ConfigLocation location) : location_(std::move(location)) {}

Supervisor::~Supervisor() = default;

Supervisor::RemovedCgroup::~RemovedCgroup() {
    if (!path.empty()) ::rmdir(path.c_str());
}

int Supervisor::run() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGHUP);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);

    if (!load_configuration() || !open_state()) return EXIT_FAILURE;
    start_kernel_side();
    if (!open_data_plane()) return EXIT_FAILURE;
    open_control_plane();
    if (!start_data_plane() || !open_front_ends() || !start_serving()) return EXIT_FAILURE;
    loop();
    stop();
    return EXIT_SUCCESS;
}

bool Supervisor::load_configuration() {
    policy::ConfigErrors errors;
    config_ = load_daemon_config(location_, errors);
    if (!config_) {
        control::log_config_errors(errors);
        return false;
    }
    auto result = load_policy(*config_);
    if (!result.ok()) {
        control::log_config_errors(result.errors);
        log(LogLevel::error, "refusing to start with an invalid configuration",
            {{"CONFIG_FILE", config_->config_file.string()}});
        return false;
    }
    policy_.publish(result.config);
    return true;
}

bool Supervisor::open_state() {
    const auto& config = *config_;
    // A peer that goes away mid-write must not kill the daemon.
    signal(SIGPIPE, SIG_IGN);
    try {
        ca_ = proxy::CertificateAuthority::load_or_create(config.state_dir / "ca");
    } catch (const proxy::CaError& error) {
        log(LogLevel::error, std::string("cannot load the interception CA: ") + error.what(),
            {{"STATE_DIR", config.state_dir.string()}});
        return false;
    }
    // The state directory: one daemon at a time, its files private.
    std::error_code ec;
    if (std::filesystem::create_directories(config.state_dir, ec)) {
        std::filesystem::permissions(config.state_dir, std::filesystem::perms::owner_all, ec);
    }
    try {
        lock_ = store::StateLock::try_acquire(config.state_dir);
        if (!lock_) {
            log(LogLevel::error, "another tameflared (or tf vault rotate) is using the state directory",
                {{"STATE_DIR", config.state_dir.string()},
                 {"HINT", "stop it first, or give this one its own state_dir"}});
            return false;
        }
        store::StoreOptions store_options;
        store_options.database = config.database_path();
        store_options.sync =
            config.store.synchronous_full ? store::Database::Sync::full : store::Database::Sync::normal;
        store_options.checkpoint_key =
            vault::VaultKey::load_or_create(config.audit_key_path(), std::getenv("CREDENTIALS_DIRECTORY"), "audit.key");
        store_options.retention.max_age = config.store.retention_max_age;
        store_options.retention.max_bytes = config.store.retention_max_bytes;
        database_ = store::Store::open(std::move(store_options));
        vault_ =
            std::make_unique<store::Vault>(*database_, store::Vault::load_key(config.vault_key_path(), *database_));
        if (const auto expired =
                database_->expire_pending_approvals("tameflared restarted; the held connection is gone")) {
            log(LogLevel::notice, std::to_string(expired) + " approvals pending before the restart expired");
        }
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("cannot open the state: ") + error.what(),
            {{"STATE_DIR", config.state_dir.string()}, {"DATABASE", config.database_path().string()}});
        return false;
    }
    bindings_ = std::make_unique<Bindings>(*database_, *vault_);
    return true;
}

// Kernel enforcement. When it cannot be set up the daemon still serves the
// explicit proxy, but launches nothing: no agent runs unenforced.
void Supervisor::start_kernel_side() {
    if (!config_->agents.enabled) return;
    try {
        auto options = agents_options(*config_, *ca_, delegated_);
        agents_root_ = options.cgroup_root;
        agents_ = std::make_unique<Agents>(std::move(options), policy_, database_.get());
        agents_->on_event([&events = bindings_->events](const std::string& type, const AgentInfo& agent, int status) {
            nlohmann::json data{{"id", agent.id},   {"gateway", agent.gateway}, {"isolation", agent.isolation},
                                {"pid", agent.pid}, {"uid", agent.uid},         {"enforced_unit", agent.enforced_unit}};
            if (type == "agent.exited") data["status"] = status;
            events.publish(control::Event{0, type, std::move(data), 1, agent.uid});
        });
    } catch (const std::exception& error) {
        log(LogLevel::error,
            std::string("kernel enforcement is unavailable; no agent can be launched: ") + error.what(),
            {{"HINT",
              "run tameflared as root on a kernel with BTF and cgroup2 (tf doctor tells what "
              "is missing), or set agents.enabled to false to use the explicit proxy only"}});
    }
}

// The proxy's listeners are bound here; the unprivileged data plane serves
// them. Its cgroup is beside the agents', never under it (their hooks would
// redirect its own upstream connections): <unit>/dataplane under systemd,
// else <agents root>-dataplane, else this process's own.
bool Supervisor::open_data_plane() {
    const auto& config = *config_;
    dataplane::RemoteDataPlaneOptions options;
    options.process.binary = dataplane_binary(config);
    const auto user = user_by_name(config.dataplane.user);
    if (user && (user->uid == 0 || user->gid == 0)) {
        log(LogLevel::error, "the data plane may not run as root (dataplane.user is " + config.dataplane.user + ")",
            {{"HINT", "name an unprivileged system user of its own, as the package's tameflare-dataplane"}});
        return false;
    }
    if (user) {
        options.process.uid = user->uid;
        options.process.gid = user->gid;
    } else if (config.dataplane.user_named) {
        log(LogLevel::error, "the data plane's user " + config.dataplane.user + " does not exist",
            {{"HINT", "create it (systemd-sysusers, or useradd --system), or name another in dataplane.user"}});
        return false;
    } else {
        log(LogLevel::warning,
            "the user " + config.dataplane.user + " does not exist; the data plane runs as nobody (65534)",
            {{"HINT", "install the package's sysusers.d file (systemd-sysusers) so that it has a user of its own"}});
    }
    try {
        if (!agents_root_.empty()) {
            dataplane_cgroup_ = delegated_
                                    ? agents_root_.parent_path() / "dataplane"
                                    : agents_root_.parent_path() / (agents_root_.filename().string() + "-dataplane");
            removed_cgroup_.path = dataplane_cgroup_;
        } else {
            dataplane_cgroup_ = netns::own_cgroup();
        }
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("cannot place the data plane in a cgroup: ") + error.what(),
            {{"HINT", "tameflared needs cgroup2 mounted"}});
        return false;
    }
    options.process.cgroup = dataplane_cgroup_;
    options.process.readable = dataplane_readable();
    options.proxy = config.proxy;
    options.config = &policy_;
    options.host = {&bindings_->traffic, &bindings_->approvals, &bindings_->credentials, ca_.get(), {}};
    if (agents_) {
        options.host.origins = [agents = agents_.get()](std::uint64_t cookie, const proxy::Endpoint& client) {
            return agents->origin(cookie, client);
        };
        options.origin_map = [agents = agents_.get()] {
            try {
                return agents->origin_map_readonly();
            } catch (const std::exception& error) {
                log(LogLevel::warning,
                    std::string("no read-only origins map for the data plane; it asks for each connection: ") +
                        error.what());
                return UniqueFd();
            }
        };
    }
    // What a dead data plane held is withdrawn: each held request is denied (its row and audit record say why).
    options.on_lost = [queue = &bindings_->queue](const std::string& why) {
        const auto denied = queue->deny_if([](const proxy::ApprovalRequest&) { return true; },
                                           "the data plane that held this request ended (" + why + ")");
        if (denied != 0) {
            log(LogLevel::notice, std::to_string(denied) + " held requests withdrawn: their data plane ended",
                {{"MESSAGE_ID", message_id::approval}, {"DECISION", "deny"}});
        }
    };
    try {
        server_ = std::make_unique<dataplane::RemoteDataPlane>(std::move(options));
    } catch (const std::system_error& error) {
        log(LogLevel::error, std::string("cannot open the proxy listeners: ") + error.what(),
            {{"HINT",
              "another process may hold the port; change proxy.transparent_listen or "
              "proxy.explicit_listen in the configuration"}});
        return false;
    }
    return true;
}

// After the control plane restored the durable kill switch and enforcement
// levels (the first data plane is told them before it accepts anything), and
// before the front ends: starting it while a D-Bus connection is open keeps
// that connection's objects from being freed when it closes (found under ASan).
bool Supervisor::start_data_plane() {
    try {
        server_->start();
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("cannot start the data plane: ") + error.what(),
            {{"DATAPLANE_CGROUP", dataplane_cgroup_.string()},
             {"HINT", "check proxy.upstream_ca_file and dataplane.binary; the data plane's own lines above say more"}});
        return false;
    }
    return true;
}

void Supervisor::open_control_plane() {
    kill_switch_ = std::make_unique<control::KillSwitchControl>(*database_, *server_);
    kill_switch_->restore();
    control::ControlServices services;
    services.config = &policy_;
    services.proxy = server_.get();
    services.approvals = &bindings_->queue;
    services.kill_switch = kill_switch_.get();
    services.store = database_.get();
    services.vault = vault_.get();
    services.agents = agents_.get();
    services.events = &bindings_->events;
    services.metrics = &bindings_->traffic;
    services.load = [this](const policy::EnforcementOverrides& levels) { return load_policy(*config_, levels); };
    services.verify = [this] {
        const auto key = vault::VaultKey::load_or_create(config_->audit_key_path(),
                                                         std::getenv("CREDENTIALS_DIRECTORY"), "audit.key");
        auto reader = database_->reader();
        return store::verify_audit(reader, &key);
    };
    services.rotate_vault = [this](const std::string& actor) {
        return vault_->rotate_key_file(config_->vault_key_path(), actor);
    };
    const auto& groups = config_->api;
    control_ = std::make_unique<control::Control>(
        std::move(services),
        control::RoleGroups{groups.owner_group, groups.admin_group, groups.member_group, groups.viewer_group});
    control_->restore();
}

bool Supervisor::open_front_ends() {
    const auto& config = *config_;
    if (config.api.enabled) {
        api::ApiOptions api_options;
        api_options.socket = config.api_socket_path();
        api_options.group = config.api.socket_group;
        api_options.mode = static_cast<mode_t>(config.api.socket_mode);
        for (const auto* role :
             {&config.api.owner_group, &config.api.admin_group, &config.api.member_group, &config.api.viewer_group}) {
            if (*role != config.api.socket_group) api_options.also_groups.push_back(*role);
        }
        // Socket activation (tameflared-api.socket): systemd holds the socket.
        if (sd_listen_fds(0) == 1 && sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, nullptr, 0) > 0) {
            api_options.listening.emplace(SD_LISTEN_FDS_START);
        }
        try {
            api_server_ = std::make_unique<api::ApiServer>(std::move(api_options), *control_);
        } catch (const std::exception& error) {
            log(LogLevel::error, std::string("cannot open the API socket: ") + error.what(),
                {{"API_SOCKET", config.api_socket_path().string()},
                 {"HINT", "check runtime_dir and api.socket; another tameflared may be running"}});
            return false;
        }
    }
    // D-Bus is a second front end; without a bus (a container, no policy
    // installed) the daemon serves on through the REST socket.
    if (config.dbus.enabled) {
        try {
            bus_service_ =
                std::make_unique<dbus::BusService>(dbus::BusOptions{config.dbus.bus, config.dbus.address}, *control_,
                                                   dbus::BusSources{&policy_, &bindings_->queue, agents_.get()});
        } catch (const std::exception& error) {
            log(LogLevel::warning, std::string("D-Bus is unavailable: ") + error.what(),
                {{"HINT",
                  "install com.tameflare.Daemon1.conf in /usr/share/dbus-1/system.d and run as root, "
                  "or set dbus.enabled to false; the REST socket serves either way"}});
        }
    }
    return true;
}

bool Supervisor::start_serving() {
    if (agents_) {
        try {
            agents_->start(*server_);
        } catch (const std::exception& error) {
            log(LogLevel::error, std::string("cannot open the launch socket: ") + error.what(),
                {{"HINT", "check runtime_dir and agents.launch_socket"}});
            server_->stop();
            return false;
        }
    }
    if (api_server_) api_server_->start();
    if (bus_service_) bus_service_->start();
    const auto transparent = server_->transparent_endpoint();
    const auto explicit_proxy = server_->explicit_endpoint();
    log(LogLevel::notice, "tameflared started: " + summary(*policy_.snapshot()),
        {{"MESSAGE_ID", message_id::started},
         {"VERSION", TF_VERSION},
         {"TRANSPARENT_LISTEN", transparent ? transparent->to_string() : "off"},
         {"EXPLICIT_LISTEN", explicit_proxy ? explicit_proxy->to_string() : "off"},
         {"CA_CERTIFICATE", (config_->state_dir / "ca" / "ca.crt").string()},
         {"DATABASE", config_->database_path().string()},
         {"API_SOCKET", api_server_ ? api_server_->path().string() : "off"},
         {"DBUS", bus_service_ ? bus_service_->unique_name() : "off"}});
    // systemd (Type=notify): ready only now that the BPF links, listeners,
    // the REST socket and the D-Bus name are up. Outside systemd these are no-ops.
    sd_notify(0, ("READY=1\n" + status_line()).c_str());
    return true;
}

std::string Supervisor::status_line() const {
    const auto counters = server_->counters();
    const auto kill = server_->kill_switch();
    const bool killed = kill.all || !kill.gateways.empty() || !kill.connectors.empty();
    return "STATUS=" + std::to_string(policy_.snapshot()->gateways.size()) + " gateways, " +
           std::to_string(agents_ ? agents_->list().size() : 0) + " agents, " +
           std::to_string(counters.connections_open) + " connections, " + std::to_string(counters.requests) +
           " requests, " + std::to_string(bindings_->queue.size()) + " pending approvals" +
           (killed ? ", KILL SWITCH ON" : "") + (agents_ ? "" : ", kernel enforcement off");
}

// Until SIGTERM or SIGINT: SIGHUP reloads; every tick feeds the watchdog
// (when every event loop answers) and updates STATUS=.
void Supervisor::loop() {
    Heartbeat heartbeat;
    while (true) {
        siginfo_t info{};
        const timespec wait = heartbeat.interval();
        const int signal = sigtimedwait(&signals_, &info, &wait);
        if (signal < 0) {
            // The tick: feed the watchdog only when every event loop answers.
            const auto timeout = heartbeat.probe_timeout();
            const char* stuck = !server_->responsive(timeout)                      ? "proxy"
                                : agents_ && !agents_->responsive(timeout)         ? "agents"
                                : api_server_ && !api_server_->responsive(timeout) ? "api"
                                                                                   : nullptr;
            if (stuck != nullptr) {
                log(LogLevel::error,
                    std::string("the ") + stuck + " event loop did not answer; not feeding the watchdog",
                    {{"LOOP", stuck}});
            } else if (heartbeat.watchdog) {
                sd_notify(0, "WATCHDOG=1");
            }
            sd_notify(0, status_line().c_str());
            continue;
        }
        if (signal == SIGHUP) {
            sd_notify(0, "RELOADING=1");
            control_->reload_by_signal();
            sd_notify(0, ("READY=1\n" + status_line()).c_str());
            continue;
        }
        return;
    }
}

void Supervisor::stop() {
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: denying held approvals, closing connections");
    log(LogLevel::notice, "tameflared stopping", {{"MESSAGE_ID", message_id::stopping}});
    drain(*server_, bindings_->queue);
    if (api_server_) api_server_->stop();
    if (bus_service_) bus_service_->stop();
    // Launched agents end with the daemon; enforced units keep running,
    // their pinned programs refusing connections until tameflared is back.
    if (agents_) agents_->stop();
    server_->stop();
    flush_log();
}

}  // namespace tameflare::daemon
