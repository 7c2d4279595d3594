// tameflared's own configuration (tameflared.json) and the reading of the
// policy files it points at. This is the I/O side of policy loading.
#pragma once

#include "daemon/proxy/server.h"
#include "policy/config.h"
#include "policy/config_error.h"
#include "policy/document.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::daemon {

// "store": where the database and keys live and how long records are kept.
// Empty paths mean the default inside state_dir.
struct StoreConfig {
    std::filesystem::path database;        // default <state_dir>/tameflared.db
    std::filesystem::path vault_key_file;  // default <state_dir>/vault.key ($CREDENTIALS_DIRECTORY/vault.key wins)
    std::filesystem::path audit_key_file;  // default <state_dir>/audit.key ($CREDENTIALS_DIRECTORY/audit.key wins)
    bool synchronous_full = false;         // "synchronous": "normal" (survives kill -9) or "full" (also power loss)
    std::chrono::seconds retention_max_age{0};  // "retention.max_age_days"; 0 keeps everything
    std::uint64_t retention_max_bytes = 0;      // "retention.max_megabytes"; 0: no limit
};

// "agents": kernel enforcement and the agents tameflared launches.
struct AgentsConfig {
    bool enabled = true;                // false: no BPF, no launch socket (explicit proxy only)
    std::filesystem::path cgroup_root;  // "" : <cgroup2 mount>/tameflare; BPF is attached here
    std::filesystem::path bpf_pin_dir{"/sys/fs/bpf/tameflare"};
    std::filesystem::path launch_socket;  // "" : <runtime_dir>/launch.sock
    std::string isolation = "netns";      // the default for tf run: "netns" or "cgroup"
    // "dynamic_uids": the uids (and gids of the same numbers) agents launched by root run as under a gateway whose
    // run_as is "dynamic": one per running agent, never a uid of /etc/passwd.
    std::uint32_t dynamic_uid_first = 2147287040;  // 0x7FFD0000
    std::uint32_t dynamic_uid_last = 2147352575;   // 0x7FFDFFFF
    // "unix_socket_filter": false leaves the kernel's unix socket filter out even where it exists: agents get the
    // documented fallback, and gateways that require the layer are refused.
    bool unix_socket_filter = true;
};

// "api": the REST control socket and who may use it.
struct ApiConfig {
    bool enabled = true;
    std::filesystem::path socket;                   // "" : <runtime_dir>/api.sock
    std::string socket_group = "tameflare-viewer";  // "" : root's group
    unsigned socket_mode = 0660;
    // The unix group (name, or a numeric gid) that grants each role.
    std::string owner_group = "tameflare-owner";
    std::string admin_group = "tameflare-admin";
    std::string member_group = "tameflare-member";
    std::string viewer_group = "tameflare-viewer";
};

// "dbus": the D-Bus front end (com.tameflare.Daemon1).
struct DbusConfig {
    bool enabled = true;
    std::string bus = "system";  // "system" or "session"
    std::string address;         // "" : the bus's default (DBUS_SYSTEM_BUS_ADDRESS, then the system socket)
};

// "dataplane": the unprivileged process that parses agents' traffic (the
// proxy and the DNS stubs).
struct DataPlaneConfig {
    // Its own user (sysusers.d makes it). Where it does not exist and the
    // file names none, it runs as nobody, with a warning.
    std::string user = "tameflare-dataplane";
    bool user_named = false;  // the file named the user: it must exist
    // "" : beside tameflared when there (a build tree), else
    // <prefix>/libexec/tameflare/tameflare-dataplane.
    std::filesystem::path binary;
};

struct DaemonConfig {
    std::filesystem::path config_file;  // where this came from ("" = built-in defaults)
    // Searched in order; a file in a later directory replaces the file with the
    // same name in an earlier one (/etc overrides /usr/share).
    std::vector<std::filesystem::path> connector_dirs{"/usr/share/tameflare/connectors", "/etc/tameflare/connectors.d"};
    std::filesystem::path gateways_dir{"/etc/tameflare/gateways.d"};
    std::filesystem::path state_dir{"/var/lib/tameflare"};
    std::filesystem::path runtime_dir{"/run/tameflare"};
    // The proxy's listeners, resolver overrides, upstream trust and limits
    // ("proxy" in the file). By default the transparent listener is
    // 127.0.0.1:15001 and the explicit one 127.0.0.1:15080.
    proxy::ProxyOptions proxy = default_proxy_options();
    StoreConfig store;
    AgentsConfig agents;
    ApiConfig api;
    DbusConfig dbus;
    DataPlaneConfig dataplane;

    [[nodiscard]] std::filesystem::path database_path() const;
    [[nodiscard]] std::filesystem::path vault_key_path() const;
    [[nodiscard]] std::filesystem::path audit_key_path() const;
    [[nodiscard]] std::filesystem::path api_socket_path() const;

    static proxy::ProxyOptions default_proxy_options();
};

inline constexpr const char* kDefaultConfigFile = "/etc/tameflare/tameflared.json";

// Reads `file`. A missing file at the default path means built-in defaults; a
// missing file named explicitly is an error. Relative paths inside the file
// are relative to the file's directory.
std::optional<DaemonConfig> load_daemon_config(const std::filesystem::path& file, bool explicit_path,
                                               policy::ConfigErrors& errors);

// Where the configuration comes from, as a command line gives it.
struct ConfigLocation {
    std::filesystem::path file = kDefaultConfigFile;
    bool explicit_file = false;                         // named with -c: it must exist
    std::vector<std::filesystem::path> connector_dirs;  // when given, replace the configured list
    std::filesystem::path gateways_dir;                 // when given, replaces the configured one
};

// load_daemon_config() with the command line's overrides applied.
std::optional<DaemonConfig> load_daemon_config(const ConfigLocation& location, policy::ConfigErrors& errors);

struct PolicyFiles {
    std::vector<policy::Document> connectors;
    std::vector<policy::Document> gateways;
};

// Lists and reads every *.json in the configured directories (sorted by name).
PolicyFiles read_policy_files(const DaemonConfig& config, policy::ConfigErrors& errors);

// Everything at once: read the files, compile the policy.
// `enforcement` replaces the files' levels for the gateways it names.
policy::LoadResult load_policy(const DaemonConfig& config, const policy::EnforcementOverrides& enforcement = {});

}  // namespace tameflare::daemon
