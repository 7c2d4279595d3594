// The control plane in-process, built the way the supervisor builds it
// (daemon/supervisor.cpp): a store and a vault in a temporary state
// directory, a proxy server without listeners, no kernel enforcement; and
// callers of each role. Shared by the suites that drive a front end's logic
// without a daemon (tests/daemon/control, tests/dbus/bus_front_test.cpp).
#pragma once

#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/control/kill_switch.h"
#include "daemon/control/metrics.h"
#include "daemon/daemon_config.h"
#include "daemon/dataplane/local.h"
#include "daemon/proxy/approvals.h"
#include "daemon/proxy/certificate_authority.h"
#include "daemon/store/audit.h"
#include "daemon/store/query.h"
#include "daemon/store/store.h"
#include "daemon/store/vault_store.h"
#include "daemon/store_services.h"
#include "daemon/vault/vault_crypto.h"
#include "tests/support/temp_dir.h"

#include <grp.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::control::test_support {

namespace fs = std::filesystem;
using namespace std::chrono_literals;  // NOLINT(google-build-using-namespace)

// Groups every Debian system has, standing in for the tameflare-* groups.
inline const RoleGroups& role_groups() {
    static const RoleGroups groups{"sys", "adm", "staff", "users"};
    return groups;
}
constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
// A login session's cgroup: not an agent's.
constexpr const char* kSessionCgroup = "/user.slice/user-1000.slice/session-1.scope";

inline std::optional<gid_t> gid_of(const std::string& name) {
    const group* entry = ::getgrnam(name.c_str());
    if (entry == nullptr) return std::nullopt;
    return entry->gr_gid;
}

inline Caller caller(uid_t uid, gid_t gid, std::vector<gid_t> groups, std::string cgroup = kSessionCgroup) {
    Caller out;
    out.pid = ::getpid();
    out.uid = uid;
    out.gid = gid;
    out.groups = std::move(groups);
    out.cgroup = std::move(cgroup);
    out.via = "test";
    out.method = "control_test";
    return out;
}

inline Caller root(std::string cgroup = kSessionCgroup) {
    return caller(0, 0, {}, std::move(cgroup));
}

inline std::string describe(const policy::ConfigErrors& errors) {
    std::string out;
    for (const auto& error : errors) out += error.file + " " + error.pointer + ": " + error.message + "\n";
    return out;
}

inline const std::string& group_for(Role role) {
    switch (role) {
        case Role::owner: return role_groups().owner;
        case Role::admin: return role_groups().admin;
        case Role::member: return role_groups().member;
        default: return role_groups().viewer;
    }
}

// The control plane and every service it uses, as Supervisor::open_state,
// open_data_plane and open_control_plane build them.
class ControlPlane : public ::testing::Test {
protected:
    void SetUp() override {
        for (const auto role : {Role::owner, Role::admin, Role::member, Role::viewer}) {
            const auto gid = gid_of(group_for(role));
            if (!gid) GTEST_SKIP() << "this system has no group " << group_for(role) << " (Debian has)";
            gids_[role] = *gid;
        }

        const fs::path root = dir_.path();
        fs::create_directories(root / "gateways.d");
        std::ofstream(root / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
              "state_dir": "state", "runtime_dir": "run", "agents": {"enabled": false}, "dbus": {"enabled": false},
              "api": {"enabled": false, "role_groups": {"owner": ")"
            << role_groups().owner << R"(", "admin": ")" << role_groups().admin << R"(", "member": ")"
            << role_groups().member << R"(", "viewer": ")" << role_groups().viewer << R"("}}})";
        std::ofstream(root / "gateways.d" / "one.json")
            << R"({"name": "one", "description": "the test gateway", "enforcement": "full",
                  "rate_limit": {"requests": 0}, "approval_timeout_seconds": 60,
                  "connectors": {"site": {"connector": "http", "domains": ["plain.test"], "preset": "read_only",
                                          "rules": [{"action": "http.post", "decision": "require_approval"}]}}})";

        policy::ConfigErrors errors;
        config_ = daemon::load_daemon_config(root / "tameflared.json", true, errors);
        ASSERT_TRUE(config_) << describe(errors);
        auto loaded = daemon::load_policy(*config_);
        ASSERT_TRUE(loaded.ok()) << describe(loaded.errors);
        policy_.publish(loaded.config);

        fs::create_directories(config_->state_dir);
        fs::permissions(config_->state_dir, fs::perms::owner_all);
        ca_ = proxy::CertificateAuthority::load_or_create(config_->state_dir / "ca");
        store::StoreOptions store_options;
        store_options.database = config_->database_path();
        store_options.checkpoint_key = vault::VaultKey::load_or_create(config_->audit_key_path(), nullptr, "audit.key");
        store_ = store::Store::open(std::move(store_options));
        vault_ = std::make_unique<store::Vault>(*store_, store::Vault::load_key(config_->vault_key_path(), *store_));

        recorded_.emplace(queue_, *store_);
        observed_.emplace(*recorded_, events_);
        stored_traffic_.emplace(*store_, false);
        metrics_.emplace(*stored_traffic_, events_);

        proxy::ProxyOptions proxy_options;  // no listeners
        proxy_options.threads = 1;
        proxy_options.system_resolver = false;
        server_.emplace(proxy_options,
                        proxy::ProxyServices{&policy_, ca_.get(), nullptr, nullptr, &*observed_, &*metrics_},
                        bpf::OriginSource{});

        kill_switch_.emplace(*store_, *server_);
        kill_switch_->restore();
        control_.emplace(services(), role_groups());
        control_->restore();
    }

    ControlServices services() {
        ControlServices out;
        out.config = &policy_;
        out.proxy = &*server_;
        out.approvals = &queue_;
        out.kill_switch = &*kill_switch_;
        out.store = store_.get();
        out.vault = vault_.get();
        out.agents = nullptr;  // kernel enforcement is off
        out.events = &events_;
        out.metrics = &*metrics_;
        out.load = [this](const policy::EnforcementOverrides& levels) { return daemon::load_policy(*config_, levels); };
        out.verify = [this] {
            const auto key = vault::VaultKey::load_or_create(config_->audit_key_path(), nullptr, "audit.key");
            auto reader = store_->reader();
            return store::verify_audit(reader, &key);
        };
        out.rotate_vault = [this](const std::string& actor) {
            return vault_->rotate_key_file(config_->vault_key_path(), actor);
        };
        return out;
    }

    // uid nobody with the role's group as a supplementary group (none: no group).
    [[nodiscard]] Caller as(Role role) const {
        if (role == Role::none) return caller(kNobody, kNogroup, {});
        return caller(kNobody, kNogroup, {gids_.at(role)});
    }

    // Holds a request for approval the way the proxy does (through the
    // recorded and observed brokers); its answer lands in answers_.
    void hold(const std::string& id) {
        proxy::ApprovalRequest request{id,
                                       "one",
                                       "agent-1",
                                       "site",
                                       "http.post",
                                       "medium",
                                       R"({"path": "/x"})",
                                       "http.post needs approval",
                                       std::chrono::system_clock::now(),
                                       60s};
        observed_->submit(request, [this, id](proxy::ApprovalAnswer given) { answers_[id] = std::move(given); });
    }

    // Collects every event the hub publishes from now on.
    void watch() {
        events_.subscribe([this](const Event& event) { seen_.push_back(event); });
    }
    [[nodiscard]] std::vector<Event> seen(std::string_view type) const {
        std::vector<Event> out;
        for (const auto& event : seen_) {
            if (event.type == type) out.push_back(event);
        }
        return out;
    }

    tameflare::testing::TempDir dir_{"tf-control"};
    std::map<Role, gid_t> gids_;
    std::optional<daemon::DaemonConfig> config_;
    policy::ConfigStore policy_;
    std::unique_ptr<proxy::CertificateAuthority> ca_;
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<store::Vault> vault_;
    EventHub events_;
    proxy::ApprovalQueue queue_;
    std::optional<daemon::RecordedApprovals> recorded_;
    std::optional<ObservedApprovals> observed_;
    std::optional<daemon::StoreTrafficSink> stored_traffic_;
    std::optional<Metrics> metrics_;
    std::optional<dataplane::LocalDataPlane> server_;  // the data plane in this process
    std::optional<KillSwitchControl> kill_switch_;
    std::optional<Control> control_;
    std::map<std::string, proxy::ApprovalAnswer> answers_;
    std::vector<Event> seen_;
};

// --- who may call what -------------------------------------------------------

}  // namespace tameflare::control::test_support
