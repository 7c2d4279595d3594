// tameflared: the TameFlare for Linux daemon.
#include "common/log.h"
#include "daemon/agents.h"
#include "daemon/api/api_server.h"
#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/control/metrics.h"
#include "daemon/daemon_config.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/proxy/server.h"
#include "daemon/store/state_lock.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "daemon/store_services.h"
#include "dbus/bus_service.h"
#include "netns/cgroup.h"

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

namespace {

using namespace tameflare;

constexpr const char* kUsage = R"(Usage: tameflared [OPTIONS]

Runs the TameFlare for Linux daemon in the foreground.

Options:
  -c, --config FILE          main configuration (default /etc/tameflare/tameflared.json)
      --connectors-dir DIR   add a connector directory (repeatable; replaces the
                             configured list on first use; later ones override)
      --gateways-dir DIR     gateway directory (default /etc/tameflare/gateways.d)
      --check-config         validate the configuration, print a summary, exit 0 if valid
  -V, --version              print the version
  -h, --help                 this text

Signals: SIGHUP reloads the configuration (a bad one is refused and the running
one kept); SIGTERM and SIGINT stop the daemon.
)";

struct Options {
    daemon::ConfigLocation location;
    bool check = false;
};

void log_errors(const policy::ConfigErrors& errors) {
    for (const auto& error : errors) {
        log(LogLevel::error, "configuration error: " + error.message,
            {{"MESSAGE_ID", message_id::config_error},
             {"CONFIG_FILE", error.file},
             {"JSON_POINTER", error.pointer},
             {"HINT", error.hint}});
    }
}

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

int check_config(const Options& options) {
    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(options.location, errors);
    if (config) {
        auto result = daemon::load_policy(*config);
        if (result.ok()) {
            std::printf("configuration OK: %s\n", summary(*result.config).c_str());
            return EXIT_SUCCESS;
        }
        errors = std::move(result.errors);
    }
    std::fputs(policy::format_errors(errors).c_str(), stderr);
    std::fprintf(stderr, "configuration invalid: %zu error(s)\n", errors.size());
    return EXIT_FAILURE;
}

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
void drain(proxy::ProxyServer& server, proxy::ApprovalQueue& queue) {
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

// One piece over 100 lines: the composition root, start-up in order; issue 23 item 4 turns it into named supervisor
// stages. NOLINTNEXTLINE(readability-function-size)
int run(const Options& options) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(options.location, errors);
    if (!config) {
        log_errors(errors);
        return EXIT_FAILURE;
    }
    policy::ConfigStore store;
    auto result = daemon::load_policy(*config);
    if (!result.ok()) {
        log_errors(result.errors);
        log(LogLevel::error, "refusing to start with an invalid configuration",
            {{"CONFIG_FILE", config->config_file.string()}});
        return EXIT_FAILURE;
    }
    store.publish(result.config);

    // A peer that goes away mid-write must not kill the daemon.
    signal(SIGPIPE, SIG_IGN);
    std::unique_ptr<proxy::CertificateAuthority> ca;
    try {
        ca = proxy::CertificateAuthority::load_or_create(config->state_dir / "ca");
    } catch (const proxy::CaError& error) {
        log(LogLevel::error, std::string("cannot load the interception CA: ") + error.what(),
            {{"STATE_DIR", config->state_dir.string()}});
        return EXIT_FAILURE;
    }
    // The state directory: one daemon at a time, its files private.
    std::error_code ec;
    if (std::filesystem::create_directories(config->state_dir, ec)) {
        std::filesystem::permissions(config->state_dir, std::filesystem::perms::owner_all, ec);
    }
    std::optional<store::StateLock> lock;
    std::unique_ptr<store::Store> database;
    std::optional<store::Vault> vault;
    try {
        lock = store::StateLock::try_acquire(config->state_dir);
        if (!lock) {
            log(LogLevel::error, "another tameflared (or tf vault rotate) is using the state directory",
                {{"STATE_DIR", config->state_dir.string()},
                 {"HINT", "stop it first, or give this one its own state_dir"}});
            return EXIT_FAILURE;
        }
        store::StoreOptions store_options;
        store_options.database = config->database_path();
        store_options.sync =
            config->store.synchronous_full ? store::Database::Sync::full : store::Database::Sync::normal;
        store_options.checkpoint_key = vault::VaultKey::load_or_create(
            config->audit_key_path(), std::getenv("CREDENTIALS_DIRECTORY"), "audit.key");
        store_options.retention.max_age = config->store.retention_max_age;
        store_options.retention.max_bytes = config->store.retention_max_bytes;
        database = store::Store::open(std::move(store_options));
        vault.emplace(*database, store::Vault::load_key(config->vault_key_path(), *database));
        if (const auto expired =
                database->expire_pending_approvals("tameflared restarted; the held connection is gone")) {
            log(LogLevel::notice, std::to_string(expired) + " approvals pending before the restart expired");
        }
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("cannot open the state: ") + error.what(),
            {{"STATE_DIR", config->state_dir.string()}, {"DATABASE", config->database_path().string()}});
        return EXIT_FAILURE;
    }
    // The proxy's approvals and records pass through the control plane's
    // observers (live events, metrics) on their way to the store.
    control::EventHub events;
    proxy::ApprovalQueue queue;
    daemon::RecordedApprovals recorded_approvals(queue, *database);
    control::ObservedApprovals approvals(recorded_approvals, events);
    daemon::StoreTrafficSink stored_traffic(*database);
    control::Metrics traffic(stored_traffic, events);
    daemon::VaultCredentials credentials(*vault);
    // Kernel enforcement. When it cannot be set up the daemon still serves
    // the explicit proxy, but launches nothing: no agent runs unenforced.
    std::unique_ptr<daemon::Agents> agents;
    if (config->agents.enabled) {
        try {
            daemon::AgentsOptions agent_options;
            agent_options.cgroup_root = config->agents.cgroup_root;
            if (agent_options.cgroup_root.empty()) {
                // Under systemd with Delegate=yes: <unit cgroup>/agents, the daemon in <unit cgroup>/daemon.
                const auto delegated = netns::adopt_delegated_cgroup();
                agent_options.cgroup_root = delegated ? *delegated : daemon::default_cgroup_root();
            }
            agent_options.pin_dir = config->agents.bpf_pin_dir;
            agent_options.launch_socket = config->agents.launch_socket.empty() ? config->runtime_dir / "launch.sock"
                                                                               : config->agents.launch_socket;
            agent_options.ca_bundle = config->runtime_dir / "ca-bundle.pem";
            agent_options.ca_certificate_pem = ca->certificate_pem();
            agent_options.default_isolation = config->agents.isolation;
            agent_options.hidden = {config->state_dir, config->agents.bpf_pin_dir.parent_path()};
            agent_options.own_sockets = {config->api_socket_path(), "/run/dbus/system_bus_socket",
                                         "/var/run/dbus/system_bus_socket"};
            // A bus of its own (tests, containers): "unix:path=/x/y[,guid=...]".
            std::string bus = config->dbus.address;
            if (const char* variable = std::getenv("DBUS_SYSTEM_BUS_ADDRESS"); bus.empty() && variable != nullptr) {
                bus = variable;
            }
            if (const auto at = bus.find("unix:path="); at != std::string::npos) {
                const auto start = at + 10;
                agent_options.own_sockets.emplace_back(bus.substr(start, bus.find_first_of(",;", start) - start));
            }
            agent_options.dynamic_uid_first = config->agents.dynamic_uid_first;
            agent_options.dynamic_uid_last = config->agents.dynamic_uid_last;
            agent_options.unix_socket_filter = config->agents.unix_socket_filter;
            agents = std::make_unique<daemon::Agents>(std::move(agent_options), store, database.get());
            agents->on_event([&events](const std::string& type, const daemon::AgentInfo& agent, int status) {
                nlohmann::json data{
                    {"id", agent.id},   {"gateway", agent.gateway}, {"isolation", agent.isolation},
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
    std::optional<proxy::ProxyServer> server;
    try {
        server.emplace(config->proxy,
                       proxy::ProxyServices{&store, ca.get(), agents.get(), &credentials, &approvals, &traffic});
    } catch (const std::system_error& error) {
        log(LogLevel::error, std::string("cannot open the proxy listeners: ") + error.what(),
            {{"HINT",
              "another process may hold the port; change proxy.transparent_listen or "
              "proxy.explicit_listen in the configuration"}});
        return EXIT_FAILURE;
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("cannot start the proxy: ") + error.what(),
            {{"HINT", "check proxy.upstream_ca_file"}});
        return EXIT_FAILURE;
    }
    daemon::KillSwitchControl kill_switch(*database, *server);
    kill_switch.restore();
    control::ControlServices services;
    services.config = &store;
    services.proxy = &*server;
    services.approvals = &queue;
    services.kill_switch = &kill_switch;
    services.store = database.get();
    services.vault = &*vault;
    services.agents = agents.get();
    services.events = &events;
    services.metrics = &traffic;
    services.load = [&config](const policy::EnforcementOverrides& levels) {
        return daemon::load_policy(*config, levels);
    };
    services.verify = [&config, &database] {
        const auto key = vault::VaultKey::load_or_create(config->audit_key_path(), std::getenv("CREDENTIALS_DIRECTORY"),
                                                         "audit.key");
        auto reader = database->reader();
        return store::verify_audit(reader, &key);
    };
    services.rotate_vault = [&config, &vault](const std::string& actor) {
        return vault->rotate_key_file(config->vault_key_path(), actor);
    };
    control::Control control(std::move(services),
                             control::RoleGroups{config->api.owner_group, config->api.admin_group,
                                                 config->api.member_group, config->api.viewer_group});
    control.restore();
    std::unique_ptr<api::ApiServer> api_server;
    if (config->api.enabled) {
        api::ApiOptions api_options;
        api_options.socket = config->api_socket_path();
        api_options.group = config->api.socket_group;
        api_options.mode = static_cast<mode_t>(config->api.socket_mode);
        for (const auto* role : {&config->api.owner_group, &config->api.admin_group, &config->api.member_group,
                                 &config->api.viewer_group}) {
            if (*role != config->api.socket_group) api_options.also_groups.push_back(*role);
        }
        // Socket activation (tameflared-api.socket): systemd holds the socket.
        if (sd_listen_fds(0) == 1 && sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, nullptr, 0) > 0) {
            api_options.listening.emplace(SD_LISTEN_FDS_START);
        }
        try {
            api_server = std::make_unique<api::ApiServer>(std::move(api_options), control);
        } catch (const std::exception& error) {
            log(LogLevel::error, std::string("cannot open the API socket: ") + error.what(),
                {{"API_SOCKET", config->api_socket_path().string()},
                 {"HINT", "check runtime_dir and api.socket; another tameflared may be running"}});
            return EXIT_FAILURE;
        }
    }
    // D-Bus is a second front end; without a bus (a container, no policy
    // installed) the daemon serves on through the REST socket.
    std::unique_ptr<dbus::BusService> bus_service;
    if (config->dbus.enabled) {
        try {
            bus_service = std::make_unique<dbus::BusService>(dbus::BusOptions{config->dbus.bus, config->dbus.address},
                                                             control, dbus::BusSources{&store, &queue, agents.get()});
        } catch (const std::exception& error) {
            log(LogLevel::warning, std::string("D-Bus is unavailable: ") + error.what(),
                {{"HINT",
                  "install com.tameflare.Daemon1.conf in /usr/share/dbus-1/system.d and run as root, "
                  "or set dbus.enabled to false; the REST socket serves either way"}});
        }
    }
    server->start();
    if (agents) {
        try {
            agents->start(*server);
        } catch (const std::exception& error) {
            log(LogLevel::error, std::string("cannot open the launch socket: ") + error.what(),
                {{"HINT", "check runtime_dir and agents.launch_socket"}});
            server->stop();
            return EXIT_FAILURE;
        }
    }
    if (api_server) api_server->start();
    if (bus_service) bus_service->start();
    const auto transparent = server->transparent_endpoint();
    const auto explicit_proxy = server->explicit_endpoint();
    log(LogLevel::notice, "tameflared started: " + summary(*store.snapshot()),
        {{"MESSAGE_ID", message_id::started},
         {"VERSION", TF_VERSION},
         {"TRANSPARENT_LISTEN", transparent ? transparent->to_string() : "off"},
         {"EXPLICIT_LISTEN", explicit_proxy ? explicit_proxy->to_string() : "off"},
         {"CA_CERTIFICATE", (config->state_dir / "ca" / "ca.crt").string()},
         {"DATABASE", config->database_path().string()},
         {"API_SOCKET", api_server ? api_server->path().string() : "off"},
         {"DBUS", bus_service ? bus_service->unique_name() : "off"}});

    // systemd (Type=notify): ready only now that the BPF links, listeners,
    // the REST socket and the D-Bus name are up. Outside systemd these are no-ops.
    const auto status_line = [&] {
        const auto counters = server->counters();
        const auto kill = server->kill_switch();
        const bool killed = kill.all || !kill.gateways.empty() || !kill.connectors.empty();
        return "STATUS=" + std::to_string(store.snapshot()->gateways.size()) + " gateways, " +
               std::to_string(agents ? agents->list().size() : 0) + " agents, " +
               std::to_string(counters.connections_open) + " connections, " + std::to_string(counters.requests) +
               " requests, " + std::to_string(queue.size()) + " pending approvals" +
               (killed ? ", KILL SWITCH ON" : "") + (agents ? "" : ", kernel enforcement off");
    };
    sd_notify(0, ("READY=1\n" + status_line()).c_str());
    Heartbeat heartbeat;
    while (true) {
        siginfo_t info{};
        const timespec wait = heartbeat.interval();
        const int signal = sigtimedwait(&signals, &info, &wait);
        if (signal < 0) {
            // The tick: feed the watchdog only when every event loop answers.
            const auto timeout = heartbeat.probe_timeout();
            const char* stuck = !server->responsive(timeout)                     ? "proxy"
                                : agents && !agents->responsive(timeout)         ? "agents"
                                : api_server && !api_server->responsive(timeout) ? "api"
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
            control.reload_by_signal();
            sd_notify(0, ("READY=1\n" + status_line()).c_str());
            continue;
        }
        sd_notify(0, "STOPPING=1\nSTATUS=stopping: denying held approvals, closing connections");
        log(LogLevel::notice, "tameflared stopping", {{"MESSAGE_ID", message_id::stopping}});
        drain(*server, queue);
        if (api_server) api_server->stop();
        if (bus_service) bus_service->stop();
        // Launched agents end with the daemon; enforced units keep running,
        // their pinned programs refusing connections until tameflared is back.
        if (agents) agents->stop();
        server->stop();
        flush_log();
        return EXIT_SUCCESS;
    }
}

}  // namespace

int main(int argc, char** argv) {
    // glibc gives a thread's heap back to the kernel as soon as its top is
    // free, and every request then faults the same pages in again: a third of
    // the proxy's CPU under load (docs/performance.md). Keep up to 64 MiB of
    // freed memory per arena; grow heaps 16 MiB at a time (address space, not
    // resident memory).
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    Options options;
    enum { kConnectorsDir = 256, kGatewaysDir, kCheck };
    const option long_options[] = {
        {"config", required_argument, nullptr, 'c'},
        {"connectors-dir", required_argument, nullptr, kConnectorsDir},
        {"gateways-dir", required_argument, nullptr, kGatewaysDir},
        {"check-config", no_argument, nullptr, kCheck},
        {"version", no_argument, nullptr, 'V'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    int c = 0;
    while ((c = getopt_long(argc, argv, "c:Vh", long_options, nullptr)) != -1) {
        switch (c) {
            case 'c':
                options.location.file = optarg;
                options.location.explicit_file = true;
                break;
            case kConnectorsDir: options.location.connector_dirs.emplace_back(optarg); break;
            case kGatewaysDir: options.location.gateways_dir = optarg; break;
            case kCheck: options.check = true; break;
            case 'V': std::printf("tameflared %s\n", TF_VERSION); return EXIT_SUCCESS;
            case 'h': std::fputs(kUsage, stdout); return EXIT_SUCCESS;
            default: std::fputs(kUsage, stderr); return 2;
        }
    }
    if (optind != argc) {
        std::fprintf(stderr, "tameflared: unexpected argument \"%s\"\n%s", argv[optind], kUsage);
        return 2;
    }
    return options.check ? check_config(options) : run(options);
}
