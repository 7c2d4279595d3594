// Reading tameflared.json and the policy directories from real files.
#include "daemon/daemon_config.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace tameflare::daemon {
namespace {

namespace fs = std::filesystem;

class TempDir : public ::testing::Test {
protected:
    testing::TempDir temp_{"tf-config"};
    const fs::path root_ = temp_.path();
    void write(const fs::path& relative, const std::string& text) {
        fs::create_directories((root_ / relative).parent_path());
        std::ofstream(root_ / relative) << text;
    }
};

const char* kConnector =
    R"({"name": "%s", "domains": ["%s"], "credential": {"header": "Authorization", "format": "Bearer {secret}"},
    "routes": [{"method": "GET", "path": "/x", "action": "%s.x.get"}]})";

std::string connector(const std::string& name, const std::string& domain) {
    char buffer[512];
    std::snprintf(buffer, sizeof buffer, kConnector, name.c_str(), domain.c_str(), name.c_str());
    return buffer;
}

TEST_F(TempDir, RelativePathsAreRelativeToTheConfigFile) {
    write("etc/tameflared.json", R"({"connector_dirs": ["../share/connectors", "connectors.d"], "gateways_dir": "gw",
                                     "state_dir": "/var/lib/x", "max_body_bytes": 4096})");
    policy::ConfigErrors errors;
    const auto config = load_daemon_config(root_ / "etc/tameflared.json", true, errors);
    ASSERT_TRUE(config) << policy::format_errors(errors);
    ASSERT_EQ(config->connector_dirs.size(), 2U);
    EXPECT_EQ(config->connector_dirs[0], root_ / "share/connectors");
    EXPECT_EQ(config->connector_dirs[1], root_ / "etc/connectors.d");
    EXPECT_EQ(config->gateways_dir, root_ / "etc/gw");
    EXPECT_EQ(config->state_dir, "/var/lib/x");
    EXPECT_EQ(config->proxy.max_body_bytes, 4096U);
}

TEST_F(TempDir, TheProxySectionIsRead) {
    write("etc/tameflared.json", R"({"proxy": {"transparent_listen": null, "explicit_listen": "[::1]:3128",
        "threads": 3, "allowed_upstreams": ["127.0.0.0/8", "fd00::/8"], "upstream_ca_file": "ca.pem",
        "hosts": {"api.github.com": ["127.0.0.7", "::1"]}, "system_resolver": false,
        "client_idle_timeout_seconds": 30, "upstream_timeout_seconds": 90}})");
    policy::ConfigErrors errors;
    const auto config = load_daemon_config(root_ / "etc/tameflared.json", true, errors);
    ASSERT_TRUE(config) << policy::format_errors(errors);
    const auto& proxy = config->proxy;
    EXPECT_FALSE(proxy.transparent_listen);
    ASSERT_TRUE(proxy.explicit_listen);
    EXPECT_EQ(proxy.explicit_listen->to_string(), "[::1]:3128");
    EXPECT_EQ(proxy.threads, 3U);
    EXPECT_EQ(proxy.allowed_upstreams.size(), 2U);
    EXPECT_EQ(proxy.upstream_ca_file, (root_ / "etc/ca.pem").string());
    ASSERT_EQ(proxy.hosts.at("api.github.com").size(), 2U);
    EXPECT_EQ(proxy.hosts.at("api.github.com")[1].to_string(), "::1");
    EXPECT_FALSE(proxy.system_resolver);
    EXPECT_EQ(proxy.client_idle_timeout, std::chrono::seconds(30));
    EXPECT_EQ(proxy.upstream_timeout, std::chrono::seconds(90));

    const auto defaults = DaemonConfig{}.proxy;
    EXPECT_EQ(defaults.transparent_listen->to_string(), "127.0.0.1:15001");
    EXPECT_EQ(defaults.explicit_listen->to_string(), "127.0.0.1:15080");
}

TEST_F(TempDir, BadProxySettingsAreRefusedWithPointers) {
    write("tameflared.json", R"({"proxy": {"explicit_listen": "localhost:80", "allowed_upstreams": ["10.0.0.0/33"],
        "hosts": {"a.example": ["not-an-ip"]}, "threads": -1, "listen": "x"}})");
    policy::ConfigErrors errors;
    EXPECT_FALSE(load_daemon_config(root_ / "tameflared.json", true, errors));
    std::vector<std::string> pointers;
    for (const auto& error : errors) pointers.push_back(error.pointer);
    EXPECT_EQ(pointers, (std::vector<std::string>{"/proxy/listen", "/proxy/explicit_listen", "/proxy/threads",
                                                  "/proxy/allowed_upstreams/0", "/proxy/hosts/a.example/0"}))
        << policy::format_errors(errors);
}

TEST_F(TempDir, TheApiSectionIsReadWithDefaultsUnderTheRuntimeDirectory) {
    write("etc/tameflared.json", R"({"runtime_dir": "run", "api": {"socket_group": "ops", "socket_mode": "0600",
        "role_groups": {"owner": "4241", "member": "deploy"}}})");
    policy::ConfigErrors errors;
    const auto config = load_daemon_config(root_ / "etc/tameflared.json", true, errors);
    ASSERT_TRUE(config) << policy::format_errors(errors);
    EXPECT_TRUE(config->api.enabled);
    EXPECT_EQ(config->api_socket_path(), root_ / "etc/run/api.sock");
    EXPECT_EQ(config->api.socket_group, "ops");
    EXPECT_EQ(config->api.socket_mode, 0600U);
    EXPECT_EQ(config->api.owner_group, "4241");
    EXPECT_EQ(config->api.admin_group, "tameflare-admin");  // not named: the default
    EXPECT_EQ(config->api.member_group, "deploy");
    EXPECT_EQ(config->api.viewer_group, "tameflare-viewer");
}

TEST_F(TempDir, BadApiSettingsAreRefusedWithPointers) {
    write("etc/tameflared.json", R"({"api": {"socket_mode": "rw-rw----", "role_groups": {"owners": "x"},
        "sockets": "/tmp/x"}})");
    policy::ConfigErrors errors;
    EXPECT_FALSE(load_daemon_config(root_ / "etc/tameflared.json", true, errors));
    const std::string text = policy::format_errors(errors);
    EXPECT_NE(text.find("/api/socket_mode"), std::string::npos) << text;
    EXPECT_NE(text.find("not an octal file mode"), std::string::npos) << text;
    EXPECT_NE(text.find("/api/role_groups/owners"), std::string::npos) << text;
    EXPECT_NE(text.find("/api/sockets"), std::string::npos) << text;
}

TEST_F(TempDir, AMissingDefaultFileMeansDefaultsButAMissingNamedFileIsAnError) {
    policy::ConfigErrors errors;
    const auto defaults = load_daemon_config(root_ / "absent.json", false, errors);
    ASSERT_TRUE(defaults);
    EXPECT_EQ(defaults->gateways_dir, "/etc/tameflare/gateways.d");
    EXPECT_EQ(defaults->connector_dirs.front(), "/usr/share/tameflare/connectors");
    const auto named = load_daemon_config(root_ / "absent.json", true, errors);
    EXPECT_FALSE(named);
    ASSERT_EQ(errors.size(), 1U);
    EXPECT_EQ(errors[0].file, (root_ / "absent.json").string());
    EXPECT_NE(errors[0].message.find("cannot read"), std::string::npos);
}

TEST_F(TempDir, BadMainConfigIsRefusedWithPointerAndHint) {
    write("tameflared.json", R"({"gateway_dir": "x", "max_body_bytes": -1})");
    policy::ConfigErrors errors;
    EXPECT_FALSE(load_daemon_config(root_ / "tameflared.json", true, errors));
    ASSERT_EQ(errors.size(), 2U);
    EXPECT_EQ(errors[0].pointer, "/gateway_dir");
    EXPECT_NE(errors[0].hint.find("gateways_dir"), std::string::npos);
    EXPECT_EQ(errors[1].pointer, "/max_body_bytes");
}

TEST_F(TempDir, ALocalConnectorFileReplacesTheShippedOneOfTheSameName) {
    write("share/alpha.json", connector("alpha", "alpha.example.com"));
    write("share/beta.json", connector("beta", "beta.example.com"));
    write("local/alpha.json", connector("alpha", "alpha.internal.example.com"));
    write("local/gamma.json", connector("gamma", "gamma.example.com"));
    write("local/notes.txt", "not json, ignored");
    write("gw/g.json", R"({"name": "g", "connectors": {"alpha": {"preset": "allow_all"}}})");
    DaemonConfig config;
    config.connector_dirs = {root_ / "share", root_ / "local"};
    config.gateways_dir = root_ / "gw";
    const auto result = load_policy(config);
    ASSERT_TRUE(result.ok()) << policy::format_errors(result.errors);
    EXPECT_EQ(result.config->connectors.size(), 3U);
    EXPECT_EQ(result.config->connectors.at("alpha")->domains.front(), "alpha.internal.example.com");
    EXPECT_NE(result.config->gateway("g")->connector_for_host("alpha.internal.example.com"), nullptr);
}

TEST_F(TempDir, TheSameConnectorUnderTwoFileNamesIsAnError) {
    write("share/alpha.json", connector("alpha", "alpha.example.com"));
    write("local/alpha-copy.json", connector("alpha", "alpha2.example.com"));
    DaemonConfig config;
    config.connector_dirs = {root_ / "share", root_ / "local"};
    config.gateways_dir = root_ / "gw";
    const auto result = load_policy(config);
    ASSERT_FALSE(result.ok());
    ASSERT_EQ(result.errors.size(), 1U);
    EXPECT_EQ(result.errors[0].file, (root_ / "share/alpha.json").string());
    EXPECT_NE(result.errors[0].message.find("also defined in"), std::string::npos);
}

TEST_F(TempDir, MissingDirectoriesAreEmptyAndAFileInPlaceOfADirectoryIsAnError) {
    write("gw", "a file, not a directory");
    DaemonConfig config;
    config.connector_dirs = {root_ / "nowhere"};
    config.gateways_dir = root_ / "gw";
    const auto result = load_policy(config);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.errors.at(0).message, "not a directory");
}

TEST_F(TempDir, TheShippedExampleConfigurationLoads) {
    policy::ConfigErrors errors;
    const auto config = load_daemon_config(fs::path(TF_SOURCE_DIR) / "examples/tameflared.json", true, errors);
    ASSERT_TRUE(config) << policy::format_errors(errors);
    const auto result = load_policy(*config);
    ASSERT_TRUE(result.ok()) << policy::format_errors(result.errors);
    EXPECT_GE(result.config->gateways.size(), 3U);
    EXPECT_EQ(result.config->connectors.size(), 17U);
}

}  // namespace
}  // namespace tameflare::daemon
