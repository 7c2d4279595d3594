#include "policy/gateway.h"

#include "common/address.h"
#include "common/text.h"

#include "policy/glob.h"
#include "policy/internal/text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <set>

namespace tameflare::policy {

namespace {

constexpr std::array<std::string_view, 3> kEffects{"allow", "require_approval", "deny"};
constexpr std::array<std::string_view, 3> kLevels{"monitor", "soft", "full"};
constexpr std::array<std::string_view, 4> kPresets{"custom", "allow_all", "read_only", "require_approval"};

Effect parse_effect(std::string_view text) {
    return text == "allow" ? Effect::allow : text == "require_approval" ? Effect::require_approval : Effect::deny;
}

bool valid_host(std::string_view host) {
    if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.') return false;
    return std::all_of(host.begin(), host.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'; });
}

std::optional<TcpRule> read_tcp_rule(const JsonNode& node) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"host", "cidr", "port", "comment"});
    static_cast<void>(node.string("comment", false));  // free text for people (tf policy suggest writes counts)
    TcpRule rule;
    const std::size_t errors_before = node.reader().error_count();
    rule.host = node.string("host", false).value_or("");
    rule.cidr = node.string("cidr", false).value_or("");
    if (rule.host.empty() == rule.cidr.empty()) {
        node.error("a tcp rule names exactly one of \"host\" and \"cidr\"",
                   "e.g. {\"host\": \"db.example.com\", \"port\": 5432} or {\"cidr\": \"192.0.2.0/24\", \"port\": 22}");
    } else if (!rule.host.empty() && !valid_host(rule.host)) {
        node.field("host")->error("invalid host name \"" + rule.host + "\"", "use a lower-case DNS name");
    } else if (!rule.cidr.empty() && !Cidr::parse(rule.cidr)) {
        node.field("cidr")->error("invalid address range \"" + rule.cidr + "\"",
                                  "use an address or address/prefix, e.g. 192.0.2.0/24");
    }
    if (const auto port = node.integer("port", 1, 65535, true)) rule.port = static_cast<std::uint16_t>(*port);
    if (node.reader().error_count() != errors_before) return std::nullopt;
    return rule;
}

// "filesystem": {"write": [...], "protect": [...], "hide": [...], "private_tmp": true}. Each list adds to the
// defaults; "!entry" takes a default out.
void read_filesystem(const JsonNode& root, Gateway& gateway) {
    const auto section = root.field("filesystem");
    if (!section || !section->expect_object()) return;
    section->allow_fields({"write", "protect", "hide", "private_tmp"});
    const FilesystemRules& defaults = default_filesystem();
    const auto read_list = [&](std::string_view key, const std::vector<std::string>& from,
                               std::vector<std::string>& to) {
        const auto given = section->string_array(key, false);
        if (!given) return;
        std::size_t index = 0;
        if (const std::string problem = merge_filesystem_list(from, *given, to, index); !problem.empty()) {
            section->field(key)->element(index).error(
                "invalid " + std::string(key) + " entry \"" + (*given)[index] + "\": " + problem,
                "give an absolute path, \"~/path\" under the launching user's home, or a path relative to the "
                "working directory (\".\" is the directory itself); '*' and '?' match within one component; "
                "\"!entry\" takes out a default");
        }
    };
    read_list("write", defaults.write, gateway.filesystem.write);
    read_list("protect", defaults.protect, gateway.filesystem.protect);
    read_list("hide", defaults.hide, gateway.filesystem.hide);
    if (const auto private_tmp = section->boolean("private_tmp")) gateway.filesystem.private_tmp = *private_tmp;
}

// run_as, keep_groups, unix_sockets, require_layers and proc: how the
// gateway's agents are sandboxed (docs/enforcement.md).
void read_sandbox(const JsonNode& root, Gateway& gateway) {
    if (auto run_as = root.string("run_as", false)) {
        const bool name_like =
            !run_as->empty() && run_as->size() <= 32 && run_as->front() != '-' &&
            std::all_of(run_as->begin(), run_as->end(), [](char c) {
                return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.';
            });
        if (!name_like) {
            root.field("run_as")->error("invalid run_as \"" + *run_as + "\"",
                                        "use \"dynamic\", \"root\", or the name of a user");
        }
        gateway.run_as = std::move(*run_as);
    }
    gateway.keep_groups = root.string_array("keep_groups", false).value_or(std::vector<std::string>{});
    if (auto sockets = root.string_array("unix_sockets", false)) {
        for (std::size_t i = 0; i < sockets->size(); ++i) {
            if (const std::string problem = unix_socket_entry_error((*sockets)[i]); !problem.empty()) {
                root.field("unix_sockets")
                    ->element(i)
                    .error("invalid unix socket \"" + (*sockets)[i] + "\": " + problem,
                           "give an absolute path (\"/run/app.sock\"), a directory ending in '/', or \"@name\" for an "
                           "abstract socket");
            }
        }
        gateway.unix_sockets = std::move(*sockets);
    } else {
        gateway.unix_sockets = default_unix_sockets();
    }
    if (auto layers = root.string_array("require_layers", false)) {
        for (std::size_t i = 0; i < layers->size(); ++i) {
            const std::string& layer = (*layers)[i];
            if (std::find(kSandboxLayers.begin(), kSandboxLayers.end(), layer) == kSandboxLayers.end()) {
                const std::string near = closest_match(layer, kSandboxLayers);
                root.field("require_layers")
                    ->element(i)
                    .error("unknown sandbox layer \"" + layer + "\"",
                           near.empty() ? "the layers are pid_namespace, landlock, landlock_scopes, "
                                          "unix_socket_filter, bind_filter and seccomp"
                                        : "did you mean \"" + near + "\"?");
            }
        }
        gateway.require_layers = std::move(*layers);
    }
    static constexpr std::array<std::string_view, 2> kProc{"pids", "full"};
    if (const auto proc = root.choice("proc", kProc, false)) gateway.proc_pids_only = *proc == "pids";
    read_filesystem(root, gateway);
}

bool valid_gateway_name(std::string_view name) {
    return is_name(name, 63, Letters::lower, "_-") && name[0] != '_' && name[0] != '-';
}

// "*", "github.*" (or "github.**"): every action of the connector.
bool is_connector_wide(const std::string& pattern, const std::string& provider) {
    const std::string_view rest = pattern.starts_with(provider + ".")
                                      ? std::string_view(pattern).substr(provider.size() + 1)
                                      : std::string_view(pattern);
    return !rest.empty() && rest.find_first_not_of('*') == std::string_view::npos;
}

bool has_dynamic_actions(const ConnectorDef& def) {
    const auto templated = [](const std::string& action) { return action.find('{') != std::string::npos; };
    if (std::any_of(def.routes.begin(), def.routes.end(), [&](const Route& r) { return templated(r.action); })) {
        return true;
    }
    if (def.jsonrpc) {
        if (templated(def.jsonrpc->fallback.action)) return true;
        return std::any_of(def.jsonrpc->methods.begin(), def.jsonrpc->methods.end(),
                           [&](const RpcMethod& m) { return templated(m.action); });
    }
    return false;
}

// "https://ghe.example.com/api/v3" -> host and path segments.
bool parse_base_url(const std::string& url, std::string& host, std::vector<std::string>& segments) {
    std::string_view rest = url;
    if (rest.starts_with("https://")) {
        rest.remove_prefix(8);
    } else if (rest.starts_with("http://")) {
        rest.remove_prefix(7);
    } else {
        return false;
    }
    const auto slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    if (const auto colon = authority.find(':'); colon != std::string_view::npos) authority = authority.substr(0, colon);
    host = ascii_lower(authority);
    segments = slash == std::string_view::npos ? std::vector<std::string>{} : split_path_template(rest.substr(slash));
    return !host.empty() && rest.find_first_of("?#{}") == std::string_view::npos;
}

// One piece over 100 lines: a connector instance's fields read in order, each with its own error and hint.
// NOLINTNEXTLINE(readability-function-size)
std::optional<ConnectorInstance> read_instance(
    const std::string& key, const JsonNode& node,
    const std::map<std::string, std::shared_ptr<const ConnectorDef>>& connectors) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"connector", "credential", "credential_header", "credential_format", "domains", "base_url",
                       "preset", "rules", "comment"});
    static_cast<void>(node.string("comment", false));
    const std::size_t errors_before = node.reader().error_count();
    ConnectorInstance instance;
    instance.name = key;
    const std::string def_name = node.string("connector", false).value_or(key);
    const auto def = connectors.find(def_name);
    if (def == connectors.end()) {
        std::vector<std::string_view> names;
        names.reserve(connectors.size());
        for (const auto& [name, unused] : connectors) names.emplace_back(name);
        const std::string suggestion = closest_match(def_name, names);
        std::string known;
        for (const auto& name : names) known += (known.empty() ? "" : ", ") + std::string(name);
        (node.field("connector") ? *node.field("connector") : node)
            .error("unknown connector \"" + def_name + "\"",
                   suggestion.empty() ? "loaded connectors: " + known + "; add a file to connectors.d for a new API"
                                      : "did you mean \"" + suggestion + "\"?");
        return std::nullopt;
    }
    instance.def = def->second;
    const ConnectorDef& connector = *instance.def;
    instance.credential = node.string("credential", false).value_or("");
    instance.credential_format = connector.credential;
    if (auto header = node.string("credential_header", false)) instance.credential_format.header = *header;
    if (auto format = node.string("credential_format", false)) {
        if (const std::string problem = credential_format_error(*format); !problem.empty()) {
            node.field("credential_format")->error(problem, "e.g. \"Bearer {secret}\"");
        }
        instance.credential_format.format = *format;
    }
    if (!instance.credential.empty() &&
        (instance.credential_format.header.empty() || instance.credential_format.format.empty())) {
        node.field("credential")
            ->error("connector \"" + connector.name + "\" does not say how to inject a credential",
                    "set credential_header and credential_format");
    }
    if (auto url = node.string("base_url", false)) {
        std::string host;
        if (!parse_base_url(*url, host, instance.base_segments)) {
            node.field("base_url")
                ->error("invalid base_url \"" + *url + "\"",
                        "use https://HOST[/PATH], e.g. https://ghe.example.com/api/v3");
        } else {
            instance.domains.push_back(host);
        }
    }
    if (auto domains = node.string_array("domains", false)) {
        for (auto& domain : *domains) domain = ascii_lower(domain);
        if (check_domains(*node.field("domains"), *domains)) {
            if (!instance.domains.empty() &&
                std::find(domains->begin(), domains->end(), instance.domains.front()) == domains->end()) {
                domains->push_back(instance.domains.front());
            }
            instance.domains = std::move(*domains);
        }
    }
    if (instance.domains.empty()) instance.domains = connector.domains;
    if (instance.domains.empty() && node.reader().error_count() == errors_before) {
        node.error("connector \"" + connector.name + "\" has no domains of its own",
                   "set \"domains\" (or \"base_url\") for this gateway");
    }
    if (const auto preset = node.choice("preset", kPresets, false)) {
        instance.preset = *preset == "allow_all"          ? Preset::allow_all
                          : *preset == "read_only"        ? Preset::read_only
                          : *preset == "require_approval" ? Preset::require_approval
                                                          : Preset::custom;
    }
    const auto statics = connector.static_actions();
    const bool dynamic = has_dynamic_actions(connector);
    std::vector<std::string_view> static_views(statics.begin(), statics.end());
    if (const auto rules = node.field("rules"); rules && rules->expect_array()) {
        for (std::size_t i = 0; i < rules->json().size(); ++i) {
            const JsonNode item = rules->element(i);
            if (!item.expect_object()) continue;
            item.allow_fields({"action", "decision", "comment"});
            static_cast<void>(item.string("comment", false));
            auto pattern = item.string("action", true);
            const auto effect = item.choice("decision", kEffects, true);
            if (!pattern || !effect) continue;
            const JsonNode at = *item.field("action");
            if (pattern->empty()) {
                at.error("empty action pattern", "use an action such as \"" + connector.name +
                                                     ".x.y\", a glob such as \"" + connector.name + ".x.*\", or \"*\"");
                continue;
            }
            if (*pattern != "*" && !pattern->starts_with(connector.name + ".")) {
                at.error("pattern \"" + *pattern + "\" does not start with \"" + connector.name + ".\"",
                         "did you mean \"" + connector.name + "." + *pattern +
                             "\"? A rule names its connector's actions in full, or is \"*\"; "
                             "rules for another connector go under that connector");
                continue;
            }
            const bool matches_static = std::any_of(statics.begin(), statics.end(),
                                                    [&](const std::string& a) { return glob_match(*pattern, a); });
            if (!dynamic && !matches_static) {
                const std::string suggestion = closest_match(*pattern, static_views);
                at.error("pattern \"" + *pattern + "\" matches no action of connector \"" + connector.name + "\"",
                         suggestion.empty() ? "`tf connectors show " + connector.name + "` lists its actions"
                                            : "did you mean \"" + suggestion + "\"?");
                continue;
            }
            if (is_connector_wide(*pattern, connector.name) && instance.preset != Preset::custom) {
                at.error(
                    "a connector-wide rule conflicts with preset \"" + std::string(to_string(instance.preset)) + "\"",
                    "drop the preset (custom) or this rule; the preset already decides every other action");
                continue;
            }
            instance.rules.push_back(PermissionRule{std::move(*pattern), parse_effect(*effect), i});
        }
    }
    if (node.reader().error_count() != errors_before) return std::nullopt;
    return instance;
}

std::optional<ConditionPolicy> read_policy(const JsonNode& node, const std::set<std::string>& providers) {
    if (!node.expect_object()) return std::nullopt;
    node.allow_fields({"name", "actions", "when", "decision", "reason"});
    const std::size_t errors_before = node.reader().error_count();
    ConditionPolicy policy;
    policy.name = node.string("name", true).value_or("");
    if (auto actions = node.string_array("actions", false)) {
        for (std::size_t i = 0; i < actions->size(); ++i) {
            const auto& pattern = (*actions)[i];
            const auto dot = pattern.find('.');
            const std::string provider = pattern.substr(0, dot);
            if (pattern != "*" && (dot == std::string::npos || !providers.contains(provider)) &&
                !has_glob_chars(provider)) {
                node.field("actions")->element(i).error(
                    "pattern \"" + pattern + "\" matches no connector of this gateway",
                    "action names start with a connector name enabled in \"connectors\"");
            }
        }
        policy.actions = std::move(*actions);
    }
    const auto decision = node.string("decision", true);
    if (decision && *decision == "allow") {
        node.field("decision")
            ->error("a condition policy cannot allow",
                    "policies only tighten a decision (deny or require_approval); "
                    "grant access with a permission rule");
    } else if (decision) {
        const std::array<std::string_view, 2> choices{"require_approval", "deny"};
        if (const auto effect = node.choice("decision", choices, true)) policy.effect = parse_effect(*effect);
    }
    policy.reason = node.string("reason", false).value_or("");
    if (const auto when = node.field("when")) {
        if (auto condition = Condition::load(*when)) policy.when = std::move(*condition);
    } else {
        node.error("missing required field \"when\"",
                   "e.g. {\"field\": \"parameters.amount\", \"op\": \"gt\", \"value\": 10000}");
    }
    if (node.reader().error_count() != errors_before) return std::nullopt;
    return policy;
}

std::string describe(const PermissionRule& rule, const ConnectorInstance& connector) {
    return "connectors." + connector.name + ".rules[" + std::to_string(rule.index) + "] " + rule.pattern + " -> " +
           std::string(to_string(rule.effect));
}

Resolution strictest(const std::vector<const PermissionRule*>& rules, const ConnectorInstance& connector,
                     Resolution::Tier tier) {
    const PermissionRule* chosen = rules.front();
    for (const PermissionRule* rule : rules) {
        if (rule->effect > chosen->effect) chosen = rule;
    }
    std::string text = describe(*chosen, connector);
    if (rules.size() > 1) text += " (strictest of " + std::to_string(rules.size()) + " matching rules)";
    return Resolution{chosen->effect, tier, std::move(text)};
}

// The gateway's connector instances, each domain served by one; the names
// of the connectors they instantiate (which policies may name).
std::set<std::string> read_connectors(const JsonNode& root,
                                      const std::map<std::string, std::shared_ptr<const ConnectorDef>>& connectors,
                                      std::vector<ConnectorInstance>& out) {
    std::map<std::string, std::string> domain_owner;
    std::set<std::string> providers;
    if (const auto list = root.field("connectors"); list && list->expect_object()) {
        for (const auto& [key, node] : list->members()) {
            if (!is_name(key, std::string::npos, Letters::lower, "_-")) {
                node.error("invalid connector instance name \"" + key + "\"",
                           "use lower-case letters, digits, '_' and '-'");
                continue;
            }
            auto instance = read_instance(key, node, connectors);
            if (!instance) continue;
            for (const auto& domain : instance->domains) {
                const auto [it, inserted] = domain_owner.emplace(domain, key);
                if (!inserted) {
                    node.error("domain \"" + domain + "\" is served by connector \"" + it->second + "\" already",
                               "a host belongs to one connector per gateway; remove it from one of them");
                }
            }
            providers.insert(instance->def->name);
            out.push_back(std::move(*instance));
        }
    } else if (!root.field("connectors")) {
        root.error("missing required field \"connectors\"",
                   "name the APIs this gateway may reach, e.g. {\"github\": {\"preset\": \"read_only\"}}");
    }
    return providers;
}

}  // namespace

std::vector<std::string> default_unix_sockets() {
    return {"/run/systemd/journal/socket",
            "/run/systemd/journal/stdout",
            "/run/systemd/journal/dev-log",
            "/dev/log",
            "/run/nscd/socket",
            "/var/run/nscd/socket"};
}

std::string unix_socket_entry_error(std::string_view entry) {
    constexpr std::size_t kSunPath = 108;  // sizeof(sockaddr_un::sun_path)
    if (entry.find('\0') != std::string_view::npos) return "a NUL byte";
    if (entry.starts_with("@")) {
        if (entry.size() < 2) return "an abstract name is empty";
        if (entry.size() > kSunPath) return "longer than a unix socket address";
        return {};
    }
    if (!entry.starts_with("/")) return "not an absolute path";
    if (entry.size() >= kSunPath) return "longer than a unix socket address";
    if (entry.find("//") != std::string_view::npos) return "an empty path component";
    const std::string text(entry);
    const std::string padded = text + (text.ends_with("/") ? "" : "/");
    if (padded.find("/./") != std::string::npos || padded.find("/../") != std::string::npos) {
        return "a '.' or '..' component";
    }
    return {};
}

std::string_view to_string(Effect effect) noexcept {
    switch (effect) {
        case Effect::allow: return "allow";
        case Effect::require_approval: return "require_approval";
        case Effect::deny: return "deny";
    }
    return "deny";
}

std::string_view to_string(Enforcement level) noexcept {
    switch (level) {
        case Enforcement::monitor: return "monitor";
        case Enforcement::soft: return "soft";
        case Enforcement::full: return "full";
    }
    return "full";
}

std::string_view to_string(Preset preset) noexcept {
    switch (preset) {
        case Preset::custom: return "custom";
        case Preset::allow_all: return "allow_all";
        case Preset::read_only: return "read_only";
        case Preset::require_approval: return "require_approval";
    }
    return "custom";
}

Resolution ConnectorInstance::resolve(const std::string& type, Access access) const {
    if (const auto it = exact.find(type); it != exact.end()) {
        return strictest(it->second, *this, Resolution::Tier::exact);
    }
    std::vector<const PermissionRule*> matching;
    wildcards.for_each_match(type, [&](const PermissionRule* rule) { matching.push_back(rule); });
    if (!matching.empty()) return strictest(matching, *this, Resolution::Tier::wildcard);
    if (connector_wide) {
        return Resolution{connector_wide->effect, Resolution::Tier::connector_wide, describe(*connector_wide, *this)};
    }
    const std::string preset_text = "connectors." + name + ".preset " + std::string(to_string(preset));
    switch (preset) {
        case Preset::allow_all: return Resolution{Effect::allow, Resolution::Tier::connector_wide, preset_text};
        case Preset::require_approval:
            return Resolution{Effect::require_approval, Resolution::Tier::connector_wide, preset_text};
        case Preset::read_only:
            return Resolution{access == Access::read ? Effect::allow : Effect::deny, Resolution::Tier::connector_wide,
                              preset_text + " (" + std::string(to_string(access)) + " access)"};
        case Preset::custom: break;
    }
    return Resolution{Effect::deny, Resolution::Tier::default_deny, "no rule matches " + type + ": default deny"};
}

const ConnectorInstance* Gateway::connector_for_host(std::string_view host) const {
    std::string key = ascii_lower(host);
    if (!key.empty() && key.back() == '.') key.pop_back();  // "api.github.com." is the same name
    if (const auto it = exact_hosts_.find(key); it != exact_hosts_.end()) return &connectors[it->second];
    for (const auto& [suffix, index] : suffix_hosts_) {
        if (key.size() > suffix.size() && key.ends_with(suffix)) return &connectors[index];
    }
    return nullptr;
}

Resolution Gateway::resolve(const ConnectorInstance& connector, const Action& action) const {
    if (const auto it = connector.cache.find(action.type); it != connector.cache.end()) {
        return it->second.by_access[action.access == Access::read ? 0 : 1];
    }
    return connector.resolve(action.type, action.access);
}

void Gateway::policies_for(const ConnectorInstance& connector, const Action& action,
                           std::vector<const ConditionPolicy*>& out) const {
    if (const auto it = connector.cache.find(action.type); it != connector.cache.end()) {
        out.insert(out.end(), it->second.policies.begin(), it->second.policies.end());
        return;
    }
    const std::size_t first = out.size();
    policy_index_.for_each_match(action.type, [&](std::size_t index) {
        const ConditionPolicy* policy = &policies[index];
        if (std::find(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(), policy) == out.end()) {
            out.push_back(policy);
        }
    });
    // File order, so the first of equally strict policies gives the reason.
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
              [](const ConditionPolicy* a, const ConditionPolicy* b) { return a->index < b->index; });
}

bool Gateway::reads_body_fields(const ConnectorInstance& connector, std::string_view type,
                                std::span<const std::string> path_parameters) const {
    std::vector<std::string> computed;
    const std::vector<std::string>* roots = &computed;
    if (const auto it = connector.cache.find(std::string(type)); it != connector.cache.end()) {
        roots = &it->second.parameter_roots;
    } else {
        policy_index_.for_each_match(
            type, [&](std::size_t index) { policies[index].when.collect_parameter_roots(computed); });
    }
    return std::any_of(roots->begin(), roots->end(), [&](const std::string& root) {
        return std::find(path_parameters.begin(), path_parameters.end(), root) == path_parameters.end();
    });
}

void Gateway::compile() {
    for (std::size_t i = 0; i < policies.size(); ++i) {
        policies[i].index = i;
        if (policies[i].actions.empty()) policy_index_.add("*", i);
        for (const auto& pattern : policies[i].actions) policy_index_.add(pattern, i);
    }
    for (std::size_t i = 0; i < connectors.size(); ++i) {
        ConnectorInstance& connector = connectors[i];
        for (const auto& rule : connector.rules) {
            if (is_connector_wide(rule.pattern, connector.def->name)) {
                if (!connector.connector_wide || rule.effect > connector.connector_wide->effect) {
                    connector.connector_wide = &rule;
                }
            } else if (has_glob_chars(rule.pattern)) {
                connector.wildcards.add(rule.pattern, &rule);
            } else {
                connector.exact[rule.pattern].push_back(&rule);
            }
        }
        for (const auto& type : connector.def->static_actions()) {
            ConnectorInstance::Cached cached{
                {connector.resolve(type, Access::read), connector.resolve(type, Access::write)}, {}};
            Action probe;
            probe.type = type;
            connector.cache.erase(type);
            policies_for(connector, probe, cached.policies);
            for (const ConditionPolicy* policy : cached.policies)
                policy->when.collect_parameter_roots(cached.parameter_roots);
            connector.cache.emplace(type, std::move(cached));
        }
        for (const auto& domain : connector.domains) {
            if (domain.starts_with("*.")) {
                suffix_hosts_.emplace_back(domain.substr(1), i);
            } else {
                exact_hosts_.emplace(domain, i);
            }
        }
    }
    // Longest suffix first, so "*.eu.example.com" beats "*.example.com".
    std::sort(suffix_hosts_.begin(), suffix_hosts_.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

std::shared_ptr<Gateway> Gateway::load(const JsonNode& root,
                                       const std::map<std::string, std::shared_ptr<const ConnectorDef>>& connectors) {
    if (!root.expect_object()) return nullptr;
    root.allow_fields({"name", "description", "enforcement", "rate_limit", "approval_timeout_seconds", "connectors",
                       "policies", "tcp", "proxy_token_sha256", "launch", "strip_environment", "run_as", "keep_groups",
                       "unix_sockets", "require_layers", "proc", "filesystem", "comment"});
    static_cast<void>(root.string("comment", false));
    const std::size_t errors_before = root.reader().error_count();
    auto gateway = std::make_shared<Gateway>();
    gateway->origin = root.reader().origin();
    if (auto name = root.string("name", true)) {
        if (!valid_gateway_name(*name)) {
            root.field("name")->error("invalid gateway name \"" + *name + "\"",
                                      "use 1-63 lower-case letters, digits, '_' and '-' (it names a cgroup)");
        }
        gateway->name = std::move(*name);
    }
    gateway->description = root.string("description", false).value_or("");
    if (const auto level = root.choice("enforcement", kLevels, false)) {
        gateway->enforcement = *level == "monitor" ? Enforcement::monitor
                               : *level == "soft"  ? Enforcement::soft
                                                   : Enforcement::full;
    }
    if (const auto limit = root.field("rate_limit"); limit && limit->expect_object()) {
        limit->allow_fields({"requests", "window_seconds"});
        if (const auto requests = limit->integer("requests", 0, 100000, false)) {
            gateway->rate_limit.requests = static_cast<std::uint32_t>(*requests);
        }
        if (const auto window = limit->integer("window_seconds", 1, 3600, false)) {
            gateway->rate_limit.window = std::chrono::seconds(*window);
        }
    }
    if (const auto timeout = root.integer("approval_timeout_seconds", 1, std::int64_t{7} * 24 * 3600, false)) {
        gateway->approval_timeout = std::chrono::seconds(*timeout);
    }
    if (auto token = root.string("proxy_token_sha256", false)) {
        if (token->size() != 64 || token->find_first_not_of("0123456789abcdef") != std::string::npos) {
            root.field("proxy_token_sha256")
                ->error("proxy_token_sha256 is not 64 lower-case hex digits",
                        "store the SHA-256 of the token, e.g. printf %s \"$TOKEN\" | sha256sum");
        }
        gateway->proxy_token_sha256 = std::move(*token);
    }
    if (const auto launch = root.field("launch"); launch && launch->expect_object()) {
        launch->allow_fields({"users", "groups"});
        gateway->launch_users = launch->string_array("users", false).value_or(std::vector<std::string>{});
        gateway->launch_groups = launch->string_array("groups", false).value_or(std::vector<std::string>{});
    }
    gateway->strip_environment = root.string_array("strip_environment", false)
                                     .value_or(std::vector<std::string>{
                                         "*_TOKEN", "*_SECRET", "*_PASSWORD", "*_API_KEY", "*_ACCESS_KEY", "AWS_*",
                                         "GITHUB_TOKEN", "GH_TOKEN", "SSH_AUTH_SOCK",
                                         // sockets of the user's session, outside the sandbox
                                         "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY"});
    read_sandbox(root, *gateway);
    if (const auto list = root.field("tcp"); list && list->expect_array()) {
        for (const auto& item : list->elements()) {
            if (auto rule = read_tcp_rule(item)) {
                rule->index = gateway->tcp.size();
                gateway->tcp.push_back(std::move(*rule));
            }
        }
    }
    const std::set<std::string> providers = read_connectors(root, connectors, gateway->connectors);
    if (const auto list = root.field("policies"); list && list->expect_array()) {
        std::set<std::string> names;
        for (const auto& item : list->elements()) {
            auto policy = read_policy(item, providers);
            if (!policy) continue;
            if (!names.insert(policy->name).second) {
                item.field("name")->error("duplicate policy name \"" + policy->name + "\"",
                                          "policy names appear in logs and traces; make them unique");
                continue;
            }
            gateway->policies.push_back(std::move(*policy));
        }
    }
    if (root.reader().error_count() != errors_before) return nullptr;
    gateway->compile();
    return gateway;
}

}  // namespace tameflare::policy
