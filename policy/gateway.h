// A gateway: the connectors an agent group may use, with permissions,
// condition policies, enforcement level, rate limit and approval timeout.
// Compiled once at load time into lookup tables; immutable afterwards.
#pragma once

#include "policy/action.h"
#include "policy/condition.h"
#include "policy/connector.h"
#include "policy/filesystem.h"
#include "policy/glob_index.h"

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace tameflare::policy {

// What permissions and policies say about an action. Ordered by restriction.
enum class Effect { allow = 0, require_approval = 1, deny = 2 };
enum class Enforcement { monitor, soft, full };
enum class Preset { custom, allow_all, read_only, require_approval };

std::string_view to_string(Effect effect) noexcept;
std::string_view to_string(Enforcement level) noexcept;
std::string_view to_string(Preset preset) noexcept;

struct PermissionRule {
    std::string pattern;  // exact action, glob, or "*"
    Effect effect = Effect::deny;
    std::size_t index = 0;  // position in the gateway file, for traces
};

// How the permission stage decided, for the trace.
struct Resolution {
    enum class Tier { exact, wildcard, connector_wide, default_deny };
    Effect effect = Effect::deny;
    Tier tier = Tier::default_deny;
    std::string rule;  // e.g. "rules[2] github.pr.* -> allow"
};

struct ConditionPolicy {
    std::size_t index = 0;  // position in the gateway file
    std::string name;
    std::vector<std::string> actions;  // glob patterns; empty: every action
    Condition when;
    Effect effect = Effect::deny;  // deny or require_approval
    std::string reason;
};

struct RateLimit {
    std::uint32_t requests = 120;  // 0: no limit
    std::chrono::seconds window{60};
};

struct ConnectorInstance {
    std::string name;  // key in the gateway's "connectors"
    std::shared_ptr<const ConnectorDef> def;
    std::vector<std::string> domains;
    std::vector<std::string> base_segments;  // from base_url
    std::string credential;                  // vault entry name, "" for none
    CredentialFormat credential_format;
    Preset preset = Preset::custom;
    std::vector<PermissionRule> rules;

    // Compiled.
    std::unordered_map<std::string, std::vector<const PermissionRule*>> exact;
    GlobIndex<const PermissionRule*> wildcards;
    const PermissionRule* connector_wide = nullptr;
    struct Cached {
        Resolution by_access[2];  // [read, write]
        std::vector<const ConditionPolicy*> policies;
        std::vector<std::string> parameter_roots;  // parameters those policies read
    };
    std::unordered_map<std::string, Cached> cache;  // every static action of the connector

    [[nodiscard]] Resolution resolve(const std::string& type, Access access) const;
};

// A raw TCP destination (neither TLS nor HTTP) the gateway's agents may
// reach: a host name (matched against the names the daemon's resolver
// returned for the destination address) or an address range, and a port.
struct TcpRule {
    std::size_t index = 0;  // position in the gateway file, for traces
    std::string host;       // lower-case name, or "" when `cidr` is set
    std::string cidr;       // "192.0.2.0/24", "2001:db8::/32" or one address
    std::uint16_t port = 0;
};

// The agent sandbox's layers a gateway may require (docs/enforcement.md).
inline constexpr std::array<std::string_view, 6> kSandboxLayers{"pid_namespace",      "landlock",    "landlock_scopes",
                                                                "unix_socket_filter", "bind_filter", "seccomp"};
// The layers every gateway requires, whatever it says.
inline constexpr std::array<std::string_view, 2> kMinimumLayers{"pid_namespace", "landlock"};
// Unix sockets agents may use when a gateway names none: the journal's and
// syslog's, and nscd's.
std::vector<std::string> default_unix_sockets();
// "" when `entry` is a valid unix_sockets entry, else what is wrong with it.
std::string unix_socket_entry_error(std::string_view entry);

class Gateway {
public:
    Gateway() = default;
    // Compiled tables point into the gateway itself: it never moves.
    Gateway(const Gateway&) = delete;
    Gateway& operator=(const Gateway&) = delete;

    std::string name;
    std::string description;
    std::string origin;  // the file it came from
    Enforcement enforcement = Enforcement::full;
    RateLimit rate_limit;
    std::chrono::seconds approval_timeout{300};
    std::vector<ConnectorInstance> connectors;
    std::vector<ConditionPolicy> policies;
    std::vector<TcpRule> tcp;
    // SHA-256 (lower-case hex) of the token that names this gateway in the
    // explicit proxy's Proxy-Authorization; "" when explicit mode is off for it.
    std::string proxy_token_sha256;
    // Who may launch agents on this gateway besides root (`tf run`): user
    // and group names ("launch": {"users": [...], "groups": [...]}).
    std::vector<std::string> launch_users;
    std::vector<std::string> launch_groups;
    // Environment variables never passed to this gateway's agents: names or
    // globs ("*_TOKEN"); the defaults cover the usual secret names.
    std::vector<std::string> strip_environment;
    // The agent's identity when root launches it (a user's agent always runs
    // as that user): "dynamic" (a uid of its own, from the daemon's
    // agents.dynamic_uids), a user name, or "root" (uid 0, only when said).
    std::string run_as = "dynamic";
    // Supplementary groups an agent keeps (of the launching user's, or of the
    // run_as user's); every other group is dropped.
    std::vector<std::string> keep_groups;
    // Unix sockets an agent may connect or send to: exact paths, directories
    // ending in '/', abstract names as "@name". Everything else is refused.
    std::vector<std::string> unix_sockets;
    // Sandbox layers a launch must get (names in kSandboxLayers); a launch
    // the kernel cannot give one of them is refused.
    std::vector<std::string> require_layers;
    // /proc inside the agent: only its processes' directories ("pids", where
    // the kernel has subset=pid) or also the global files ("full").
    bool proc_pids_only = true;
    // Where the agents may write, what stays read-only and what is hidden
    // (policy/filesystem.h): the defaults, with the gateway's entries added.
    FilesystemRules filesystem = default_filesystem();

    // nullptr when no connector of this gateway serves `host` (any case, no port).
    [[nodiscard]] const ConnectorInstance* connector_for_host(std::string_view host) const;
    [[nodiscard]] Resolution resolve(const ConnectorInstance& connector, const Action& action) const;
    // The condition policies whose action patterns cover `action`.
    void policies_for(const ConnectorInstance& connector, const Action& action,
                      std::vector<const ConditionPolicy*>& out) const;
    // Whether a condition policy on an action of this type reads a parameter
    // that is not one of `path_parameters` (and so may come from the body).
    [[nodiscard]] bool reads_body_fields(const ConnectorInstance& connector, std::string_view type,
                                         std::span<const std::string> path_parameters) const;

    // Reads one gateway file against the loaded connectors; nullptr after recording errors.
    static std::shared_ptr<Gateway> load(const JsonNode& root,
                                         const std::map<std::string, std::shared_ptr<const ConnectorDef>>& connectors);

private:
    void compile();
    std::unordered_map<std::string, std::size_t> exact_hosts_;
    std::vector<std::pair<std::string, std::size_t>> suffix_hosts_;  // ".example.com"
    GlobIndex<std::size_t> policy_index_;                            // action pattern -> index into policies
};

}  // namespace tameflare::policy
