#include "daemon/agent_environment.h"

#include "daemon/proxy/trust_store.h"

#include <algorithm>
#include <charconv>

namespace tameflare::daemon {
namespace {

std::string_view name_of(std::string_view entry) {
    return entry.substr(0, entry.find('='));
}

void set(std::vector<std::string>& env, const std::string& name, const std::string& value) {
    std::erase_if(env, [&](const std::string& entry) { return name_of(entry) == name; });
    env.push_back(name + "=" + value);
}

// The caller's GIT_CONFIG_COUNT, 0 when absent or not a count.
std::size_t git_config_count(const std::vector<std::string>& env) {
    for (const auto& entry : env) {
        if (name_of(entry) != "GIT_CONFIG_COUNT") continue;
        const std::string_view value = std::string_view(entry).substr(entry.find('=') + 1);
        std::size_t count = 0;
        const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), count);
        if (error == std::errc() && end == value.data() + value.size()) return count;
    }
    return 0;
}

}  // namespace

void add_java_trust(std::vector<std::string>& env, const std::string& store) {
    std::string options;
    for (const auto& entry : env) {
        if (name_of(entry) == "JAVA_TOOL_OPTIONS") options = entry.substr(entry.find('=') + 1) + " ";
    }
    set(env, "JAVA_TOOL_OPTIONS", options + proxy::java_trust_options(store));
}

std::string credential_placeholder(std::string_view instance) {
    return "tameflare-placeholder-" + std::string(instance);
}

void add_connector_environment(const policy::Gateway& gateway, std::vector<std::string>& env) {
    std::vector<std::string> hosts;
    for (const auto& instance : gateway.connectors) {
        if (!instance.credential.empty()) {
            for (const auto& name : instance.def->credential_environment) {
                set(env, name, credential_placeholder(instance.name));
            }
        }
        for (const auto& host : instance.def->ssh_remotes) {
            const bool served =
                std::find(instance.domains.begin(), instance.domains.end(), host) != instance.domains.end();
            if (served && std::find(hosts.begin(), hosts.end(), host) == hosts.end()) hosts.push_back(host);
        }
    }
    if (hosts.empty()) return;
    std::size_t count = git_config_count(env);
    for (const auto& host : hosts) {
        for (const std::string& remote : {"git@" + host + ":", "ssh://git@" + host + "/"}) {
            set(env, "GIT_CONFIG_KEY_" + std::to_string(count), "url.https://" + host + "/.insteadOf");
            set(env, "GIT_CONFIG_VALUE_" + std::to_string(count), remote);
            ++count;
        }
    }
    set(env, "GIT_CONFIG_COUNT", std::to_string(count));
}

}  // namespace tameflare::daemon
