#include "daemon/daemon_config.h"

#include "policy/json_reader.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace tameflare::daemon {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxConfigFileBytes = 4 << 20;

std::optional<std::string> read_file(const fs::path& path, policy::ConfigErrors& errors) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (!ec && size > kMaxConfigFileBytes) {
        errors.push_back(
            {path.string(), "", 0, 0, "file is larger than 4 MiB", "split it, or check it is the right file"});
        return std::nullopt;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        errors.push_back({path.string(), "", 0, 0, std::string("cannot read: ") + std::strerror(errno),
                          "check that the file exists and is readable by the daemon"});
        return std::nullopt;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// *.json files of `dir` by file name; a missing directory is an empty one.
std::map<std::string, fs::path> json_files(const fs::path& dir, policy::ConfigErrors& errors) {
    std::map<std::string, fs::path> files;
    std::error_code ec;
    if (!fs::exists(dir, ec)) return files;
    if (!fs::is_directory(dir, ec)) {
        errors.push_back(
            {dir.string(), "", 0, 0, "not a directory", "point the setting at a directory of *.json files"});
        return files;
    }
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const auto& path = it->path();
        if (path.extension() != ".json" || path.filename().string().starts_with(".")) continue;
        if (!it->is_regular_file(ec)) continue;
        files[path.filename().string()] = path;
    }
    if (ec) {
        errors.push_back({dir.string(), "", 0, 0, "cannot list directory: " + ec.message(), "check its permissions"});
    }
    return files;
}

fs::path resolve(const fs::path& base, const std::string& value) {
    const fs::path path(value);
    return path.is_absolute() ? path : (base / path).lexically_normal();
}

// "proxy": listeners, resolver overrides, upstream trust and limits.
void read_proxy(const policy::JsonNode& node, const fs::path& base, proxy::ProxyOptions& options) {
    if (!node.expect_object()) return;
    node.allow_fields({"transparent_listen", "explicit_listen", "threads", "max_body_bytes", "allowed_upstreams",
                       "upstream_ca_file", "hosts", "system_resolver", "client_idle_timeout_seconds",
                       "upstream_timeout_seconds"});
    const auto listen = [&](std::string_view key, std::optional<proxy::Endpoint>& out) {
        const auto field = node.field(key);
        if (!field) return;
        if (field->json().is_null()) {  // null: this listener is off
            out.reset();
            return;
        }
        const auto text = node.string(key, false);
        if (!text) return;
        if (auto endpoint = proxy::Endpoint::parse(*text)) {
            out = *endpoint;
        } else {
            field->error("invalid listen address \"" + *text + "\"",
                         "use address:port, e.g. \"127.0.0.1:15080\" or \"[::1]:15080\"; null turns it off");
        }
    };
    listen("transparent_listen", options.transparent_listen);
    listen("explicit_listen", options.explicit_listen);
    if (const auto threads = node.integer("threads", 0, 256, false)) options.threads = static_cast<unsigned>(*threads);
    if (const auto bytes = node.integer("max_body_bytes", 0, 64 << 20, false)) {
        options.max_body_bytes = static_cast<std::size_t>(*bytes);
    }
    if (const auto list = node.string_array("allowed_upstreams", false)) {
        options.allowed_upstreams.clear();
        for (std::size_t i = 0; i < list->size(); ++i) {
            if (auto cidr = proxy::Cidr::parse((*list)[i])) {
                options.allowed_upstreams.push_back(*cidr);
            } else {
                node.field("allowed_upstreams")
                    ->element(i)
                    .error("invalid address range \"" + (*list)[i] + "\"",
                           "use an address or address/prefix, e.g. \"10.1.0.0/16\"");
            }
        }
    }
    if (const auto file = node.string("upstream_ca_file", false)) {
        options.upstream_ca_file = file->empty() ? "" : resolve(base, *file).string();
    }
    if (const auto hosts = node.field("hosts"); hosts && hosts->expect_object()) {
        options.hosts.clear();
        for (const auto& [name, addresses] : hosts->members()) {
            if (!addresses.expect_array()) continue;
            auto& list = options.hosts[name];
            for (const auto& item : addresses.elements()) {
                const auto* text = item.json().is_string() ? item.json().get_ptr<const std::string*>() : nullptr;
                if (const auto address = text ? proxy::IpAddress::parse(*text) : std::nullopt) {
                    list.push_back(*address);
                } else {
                    item.error("not an IP address", "list the addresses this name resolves to, e.g. [\"127.0.0.7\"]");
                }
            }
        }
    }
    if (const auto value = node.boolean("system_resolver")) options.system_resolver = *value;
    if (const auto seconds = node.integer("client_idle_timeout_seconds", 1, 86400, false)) {
        options.client_idle_timeout = std::chrono::seconds(*seconds);
    }
    if (const auto seconds = node.integer("upstream_timeout_seconds", 1, 86400, false)) {
        options.upstream_timeout = std::chrono::seconds(*seconds);
    }
}

// "store": database, keys, durability, retention.
void read_store(const policy::JsonNode& node, const fs::path& base, StoreConfig& store) {
    if (!node.expect_object()) return;
    node.allow_fields({"database", "vault_key_file", "audit_key_file", "synchronous", "retention"});
    if (const auto file = node.string("database", false)) store.database = resolve(base, *file);
    if (const auto file = node.string("vault_key_file", false)) store.vault_key_file = resolve(base, *file);
    if (const auto file = node.string("audit_key_file", false)) store.audit_key_file = resolve(base, *file);
    if (const auto mode = node.string("synchronous", false)) {
        if (*mode == "full" || *mode == "normal") {
            store.synchronous_full = *mode == "full";
        } else {
            node.field("synchronous")
                ->error("unknown synchronous mode \"" + *mode + "\"",
                        "use \"full\" (survives power loss) or \"normal\" (survives a crash of the daemon)");
        }
    }
    if (const auto retention = node.field("retention"); retention && retention->expect_object()) {
        retention->allow_fields({"max_age_days", "max_megabytes"});
        if (const auto days = retention->integer("max_age_days", 0, 36500, false)) {
            store.retention_max_age = std::chrono::hours(24 * *days);
        }
        if (const auto megabytes = retention->integer("max_megabytes", 0, 1 << 24, false)) {
            store.retention_max_bytes = static_cast<std::uint64_t>(*megabytes) << 20;
        }
    }
}

// "agents": kernel enforcement.
void read_agents(const policy::JsonNode& node, const fs::path& base, AgentsConfig& agents) {
    if (!node.expect_object()) return;
    node.allow_fields(
        {"enabled", "cgroup_root", "bpf_pin_dir", "launch_socket", "isolation", "dynamic_uids", "unix_socket_filter"});
    if (const auto enabled = node.boolean("enabled")) agents.enabled = *enabled;
    if (const auto dir = node.string("cgroup_root", false)) agents.cgroup_root = resolve(base, *dir);
    if (const auto dir = node.string("bpf_pin_dir", false)) agents.bpf_pin_dir = resolve(base, *dir);
    if (const auto file = node.string("launch_socket", false)) agents.launch_socket = resolve(base, *file);
    static constexpr std::array<std::string_view, 2> kIsolation{"netns", "cgroup"};
    if (const auto isolation = node.choice("isolation", kIsolation, false)) agents.isolation = *isolation;
    if (const auto filter = node.boolean("unix_socket_filter")) agents.unix_socket_filter = *filter;
    if (const auto range = node.string("dynamic_uids", false)) {
        // "FIRST-LAST": above the ordinary and system ranges, and never 65534 (nobody) or 4294967295 (-1).
        unsigned long first = 0;
        unsigned long last = 0;
        char dash = 0;
        std::istringstream in(*range);
        const bool parsed = (in >> first >> dash >> last) && dash == '-' && in.peek() == EOF;
        if (!parsed || first < 65536 || last < first || last >= 4294967295UL) {
            node.field("dynamic_uids")
                ->error("invalid dynamic_uids \"" + *range + "\"",
                        "give FIRST-LAST with 65536 <= FIRST <= LAST < 4294967295, e.g. \"2147287040-2147352575\"");
        } else {
            agents.dynamic_uid_first = static_cast<std::uint32_t>(first);
            agents.dynamic_uid_last = static_cast<std::uint32_t>(last);
        }
    }
}

// "api": the REST control socket.
void read_api(const policy::JsonNode& node, const fs::path& base, ApiConfig& api) {
    if (!node.expect_object()) return;
    node.allow_fields({"enabled", "socket", "socket_group", "socket_mode", "role_groups"});
    if (const auto enabled = node.boolean("enabled")) api.enabled = *enabled;
    if (const auto file = node.string("socket", false)) api.socket = resolve(base, *file);
    if (const auto group = node.string("socket_group", false)) api.socket_group = *group;
    if (const auto mode = node.string("socket_mode", false)) {
        // An octal string, as chmod takes it: "0660".
        unsigned value = 0;
        const bool octal =
            !mode->empty() && mode->size() <= 4 && mode->find_first_not_of("01234567") == std::string::npos;
        if (octal) value = static_cast<unsigned>(std::stoul(*mode, nullptr, 8));
        if (!octal) {
            node.field("socket_mode")
                ->error("socket_mode \"" + *mode + "\" is not an octal file mode",
                        "use \"0660\" (root and socket_group), or \"0666\" to let every user reach the "
                        "socket (each call is still checked against the caller's role)");
        } else {
            api.socket_mode = value;
        }
    }
    if (const auto roles = node.field("role_groups"); roles && roles->expect_object()) {
        roles->allow_fields({"owner", "admin", "member", "viewer"});
        if (const auto group = roles->string("owner", false)) api.owner_group = *group;
        if (const auto group = roles->string("admin", false)) api.admin_group = *group;
        if (const auto group = roles->string("member", false)) api.member_group = *group;
        if (const auto group = roles->string("viewer", false)) api.viewer_group = *group;
    }
}

// "dbus": the D-Bus front end.
void read_dbus(const policy::JsonNode& node, DbusConfig& dbus) {
    if (!node.expect_object()) return;
    node.allow_fields({"enabled", "bus", "address"});
    if (const auto enabled = node.boolean("enabled")) dbus.enabled = *enabled;
    static constexpr std::array<std::string_view, 2> kBuses{"system", "session"};
    if (const auto bus = node.choice("bus", kBuses, false)) dbus.bus = *bus;
    if (const auto address = node.string("address", false)) dbus.address = *address;
}

// "dataplane": who and what the unprivileged data plane is.
void read_dataplane(const policy::JsonNode& node, const fs::path& base, DataPlaneConfig& dataplane) {
    if (!node.expect_object()) return;
    node.allow_fields({"user", "binary"});
    if (const auto user = node.string("user", false)) {
        dataplane.user = *user;
        dataplane.user_named = true;
    }
    if (const auto binary = node.string("binary", false)) dataplane.binary = resolve(base, *binary);
}

}  // namespace

fs::path DaemonConfig::api_socket_path() const {
    return api.socket.empty() ? runtime_dir / "api.sock" : api.socket;
}

fs::path DaemonConfig::database_path() const {
    return store.database.empty() ? state_dir / "tameflared.db" : store.database;
}

fs::path DaemonConfig::vault_key_path() const {
    return store.vault_key_file.empty() ? state_dir / "vault.key" : store.vault_key_file;
}

fs::path DaemonConfig::audit_key_path() const {
    return store.audit_key_file.empty() ? state_dir / "audit.key" : store.audit_key_file;
}

proxy::ProxyOptions DaemonConfig::default_proxy_options() {
    proxy::ProxyOptions options;
    options.transparent_listen = proxy::Endpoint::parse("127.0.0.1:15001");
    options.explicit_listen = proxy::Endpoint::parse("127.0.0.1:15080");
    return options;
}

std::optional<DaemonConfig> load_daemon_config(const fs::path& file, bool explicit_path, policy::ConfigErrors& errors) {
    DaemonConfig config;
    std::error_code ec;
    if (!explicit_path && !fs::exists(file, ec)) return config;
    const std::size_t errors_before = errors.size();
    const auto text = read_file(file, errors);
    if (!text) return std::nullopt;
    config.config_file = file;
    policy::JsonReader reader(file.string(), errors);
    const auto json = reader.parse(*text);
    if (!json) return std::nullopt;
    const policy::JsonNode root(reader, *json, "");
    if (!root.expect_object()) return std::nullopt;
    root.allow_fields({"connector_dirs", "gateways_dir", "state_dir", "runtime_dir", "max_body_bytes", "proxy", "store",
                       "agents", "api", "dbus", "dataplane"});
    const fs::path base = fs::absolute(file, ec).parent_path();
    if (const auto dirs = root.string_array("connector_dirs", false)) {
        config.connector_dirs.clear();
        for (const auto& dir : *dirs) config.connector_dirs.push_back(resolve(base, dir));
    }
    if (const auto dir = root.string("gateways_dir", false)) config.gateways_dir = resolve(base, *dir);
    if (const auto dir = root.string("state_dir", false)) config.state_dir = resolve(base, *dir);
    if (const auto dir = root.string("runtime_dir", false)) config.runtime_dir = resolve(base, *dir);
    if (const auto bytes = root.integer("max_body_bytes", 0, 64 << 20, false)) {
        config.proxy.max_body_bytes = static_cast<std::size_t>(*bytes);  // the older place for it
    }
    if (const auto proxy = root.field("proxy")) read_proxy(*proxy, base, config.proxy);
    if (const auto store = root.field("store")) read_store(*store, base, config.store);
    if (const auto agents = root.field("agents")) read_agents(*agents, base, config.agents);
    if (const auto api = root.field("api")) read_api(*api, base, config.api);
    if (const auto dbus = root.field("dbus")) read_dbus(*dbus, config.dbus);
    if (const auto dataplane = root.field("dataplane")) read_dataplane(*dataplane, base, config.dataplane);
    if (errors.size() != errors_before) return std::nullopt;
    return config;
}

std::optional<DaemonConfig> load_daemon_config(const ConfigLocation& location, policy::ConfigErrors& errors) {
    auto config = load_daemon_config(location.file, location.explicit_file, errors);
    if (!config) return std::nullopt;
    if (!location.connector_dirs.empty()) config->connector_dirs = location.connector_dirs;
    if (!location.gateways_dir.empty()) config->gateways_dir = location.gateways_dir;
    return config;
}

PolicyFiles read_policy_files(const DaemonConfig& config, policy::ConfigErrors& errors) {
    PolicyFiles files;
    std::map<std::string, fs::path> connectors;
    for (const auto& dir : config.connector_dirs) {
        for (auto& [name, path] : json_files(dir, errors)) connectors[name] = path;  // later dirs override
    }
    for (const auto& [name, path] : connectors) {
        if (auto text = read_file(path, errors)) files.connectors.push_back({path.string(), std::move(*text)});
    }
    for (const auto& [name, path] : json_files(config.gateways_dir, errors)) {
        if (auto text = read_file(path, errors)) files.gateways.push_back({path.string(), std::move(*text)});
    }
    return files;
}

policy::LoadResult load_policy(const DaemonConfig& config, const policy::EnforcementOverrides& enforcement) {
    policy::ConfigErrors errors;
    const auto files = read_policy_files(config, errors);
    auto result = policy::load_config(files.connectors, files.gateways, enforcement);
    if (!errors.empty()) {
        errors.insert(errors.end(), result.errors.begin(), result.errors.end());
        return policy::LoadResult{nullptr, std::move(errors)};
    }
    return result;
}

}  // namespace tameflare::daemon
