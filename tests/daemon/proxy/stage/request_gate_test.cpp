// The request gate, without sockets: where a request may go, or the
// refusal the proxy writes, for each way a client reaches the proxy.
#include "daemon/proxy/stage/request_gate.h"

#include "policy/config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace tameflare::proxy::stage {
namespace {

struct GateCase {
    const char* name;
    ConnectionFacts connection;
    RequestFacts request;
    // Admitted: host, port, path. Refused: status, error code and words of the reason.
    const char* host = nullptr;
    std::uint16_t port = 0;
    const char* path = nullptr;
    unsigned status = 0;
    const char* error = "";
    const char* reason = "";
};

const ConnectionFacts kTransparent{Mode::transparent, "", false, 443};
const ConnectionFacts kTransparentTls{Mode::transparent, "api.github.com", true, 443};
const ConnectionFacts kTunnelPlain{Mode::explicit_tunnel, "plain.test", false, 8080};
const ConnectionFacts kExplicit{Mode::explicit_plain, "", false, 3128};

const GateCase kCases[] = {
    {"origin form", kTransparent, {"GET", "/repos/a/b", "api.github.com"}, "api.github.com", 443, "/repos/a/b"},
    {"host is lower-cased", kTransparent, {"GET", "/", "API.GitHub.com"}, "api.github.com", 443, "/"},
    {"options star", kTransparent, {"OPTIONS", "*", "h.test"}, "h.test", 443, "*"},
    {"star is only for OPTIONS",
     kTransparent,
     {"GET", "*", "h.test"},
     nullptr,
     0,
     nullptr,
     400,
     "bad_request",
     "origin-form"},
    {"absolute form is refused off the explicit proxy",
     kTransparent,
     {"GET", "http://h.test/", "h.test"},
     nullptr,
     0,
     nullptr,
     400,
     "bad_request",
     "origin-form"},
    {"no host", kTransparent, {"GET", "/", ""}, nullptr, 0, nullptr, 400, "bad_request", "Host header"},
    {"bad host port",
     kTransparent,
     {"GET", "/", "h.test:99999"},
     nullptr,
     0,
     nullptr,
     400,
     "bad_request",
     "Host header"},
    {"bare ipv6 host", kTransparent, {"GET", "/", "::1"}, nullptr, 0, nullptr, 400, "bad_request", "Host header"},
    {"bracketed ipv6 host", kTransparent, {"GET", "/", "[::1]:443"}, "::1", 443, "/"},
    {"host port must be the dialed port",
     kTransparent,
     {"GET", "/", "h.test:8443"},
     nullptr,
     0,
     nullptr,
     403,
     "",
     "Host port 8443 does not match the destination port 443"},
    {"host must be the TLS server name",
     kTransparentTls,
     {"GET", "/", "evil.test"},
     nullptr,
     0,
     nullptr,
     403,
     "",
     "does not match the TLS server name \"api.github.com\""},
    {"the TLS server name itself", kTransparentTls, {"GET", "/x", "api.github.com:443"}, "api.github.com", 443, "/x"},
    {"host must be the CONNECT target",
     kTunnelPlain,
     {"GET", "/", "other.test:8080"},
     nullptr,
     0,
     nullptr,
     403,
     "",
     "does not match the CONNECT target \"plain.test\""},
    {"explicit absolute form",
     kExplicit,
     {"GET", "http://Plain.test:8080/a?b=1", "plain.test:8080"},
     "plain.test",
     8080,
     "/a?b=1"},
    {"explicit without a path", kExplicit, {"GET", "http://plain.test", ""}, "plain.test", 80, "/"},
    {"explicit query only", kExplicit, {"GET", "http://plain.test?x=1", ""}, "plain.test", 80, "/?x=1"},
    {"explicit needs http://",
     kExplicit,
     {"GET", "https://plain.test/", ""},
     nullptr,
     0,
     nullptr,
     400,
     "bad_request",
     "absolute-form http://"},
    {"explicit origin form",
     kExplicit,
     {"GET", "/", "plain.test"},
     nullptr,
     0,
     nullptr,
     400,
     "bad_request",
     "absolute-form http://"},
    {"explicit host must match the target",
     kExplicit,
     {"GET", "http://plain.test/", "evil.test"},
     nullptr,
     0,
     nullptr,
     403,
     "",
     "Host header does not match the request target"},
    {"explicit target without a host",
     kExplicit,
     {"GET", "http:///x", ""},
     nullptr,
     0,
     nullptr,
     403,
     "",
     "does not match the request target"},
};

TEST(RequestGate, AdmitsOrRefusesEachCase) {
    for (const auto& c : kCases) {
        SCOPED_TRACE(c.name);
        const auto result = gate_request(c.connection, c.request);
        if (c.host != nullptr) {
            ASSERT_TRUE(std::holds_alternative<Target>(result)) << std::get<Refusal>(result).reason;
            const auto& target = std::get<Target>(result);
            EXPECT_EQ(target.host, c.host);
            EXPECT_EQ(target.port, c.port);
            EXPECT_EQ(target.path, c.path);
            EXPECT_EQ(target.from_absolute_form, c.connection.mode == Mode::explicit_plain);
        } else {
            ASSERT_TRUE(std::holds_alternative<Refusal>(result)) << std::get<Target>(result).host;
            const auto& refusal = std::get<Refusal>(result);
            EXPECT_EQ(refusal.status, c.status);
            EXPECT_EQ(refusal.error, c.error);
            EXPECT_NE(refusal.reason.find(c.reason), std::string::npos) << refusal.reason;
        }
    }
}

TEST(RequestGate, ARefusalAfterTheHostIsKnownNamesItForTheRecord) {
    const auto refused = gate_request(kTransparentTls, {"GET", "/", "Evil.test"});
    ASSERT_TRUE(std::holds_alternative<Refusal>(refused));
    EXPECT_EQ(std::get<Refusal>(refused).host, "evil.test");
    const auto no_host = gate_request(kTransparent, {"GET", "/", ""});
    EXPECT_EQ(std::get<Refusal>(no_host).host, "");
}

TEST(SplitHostPort, ReadsNamesAddressesAndPortsAndRefusesTheRest) {
    EXPECT_EQ(split_host_port("a.test")->host, "a.test");
    EXPECT_FALSE(split_host_port("a.test")->port.has_value());
    EXPECT_EQ(split_host_port("a.test:1")->port, 1);
    EXPECT_EQ(split_host_port("a.test:65535")->port, 65535);
    EXPECT_EQ(split_host_port("[2001:db8::1]")->host, "2001:db8::1");
    EXPECT_EQ(split_host_port("[2001:db8::1]:8443")->port, 8443);
    for (const char* bad : {"", ":80", "a.test:", "a.test:0", "a.test:65536", "a.test:8x", "a.test:123456", "[::1",
                            "[::1]x", "[::1]:", "[]:80", "2001:db8::1"}) {
        EXPECT_FALSE(split_host_port(bad).has_value()) << bad;
    }
}

// Gateways "dev" (proxy token "s3cret") and "other" (token "t0ken").
std::shared_ptr<const policy::Config> login_config() {
    std::ifstream in(TF_SOURCE_DIR "/connectors/http.json");
    std::ostringstream http;
    http << in.rdbuf();
    const auto gateway = [](const char* name, const char* sha256) {
        return nlohmann::json{
            {"name", name},
            {"proxy_token_sha256", sha256},
            {"connectors", {{"plain", {{"connector", "http"}, {"domains", {"plain.test"}}, {"preset", "allow_all"}}}}}};
    };
    // printf %s s3cret | sha256sum; printf %s t0ken | sha256sum
    auto result = policy::load_config(
        {{"http.json", http.str()}},
        {{"dev.json", gateway("dev", "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0").dump()},
         {"other.json", gateway("other", "b46c09677343261f0b439a472422225e3a230c9c094d6ab16762e2036b597053").dump()}});
    EXPECT_TRUE(result.ok()) << policy::format_errors(result.errors);
    return result.config;
}

TEST(ExplicitLogin, NamesTheGatewayOnlyForItsToken) {
    const auto config = login_config();
    ASSERT_NE(config, nullptr);
    const auto login = explicit_login(*config, "Basic ZGV2OnMzY3JldA==");  // dev:s3cret
    ASSERT_TRUE(std::holds_alternative<std::string>(login)) << std::get<Refusal>(login).reason;
    EXPECT_EQ(std::get<std::string>(login), "dev");
    EXPECT_EQ(std::get<std::string>(explicit_login(*config, "basic ZGV2OnMzY3JldA==", "dev")), "dev");

    const struct {
        std::optional<std::string_view> header;
        std::string_view bound;
        const char* reason;
    } refused[] = {
        {std::nullopt, "", "needs Proxy-Authorization"},
        {"Bearer ZGV2OnMzY3JldA==", "", "Basic scheme"},
        {"Basic", "", "Basic scheme"},
        {"Basic ZGV2czNjcmV0", "", "not base64 of <gateway>:<token>"},  // no colon
        {"Basic %%%%", "", "not base64"},
        {"Basic ZGV2Ondyb25n", "", "wrong token"},            // dev:wrong
        {"Basic bm9ib2R5OnMzY3JldA==", "", "wrong token"},    // nobody:s3cret
        {"Basic b3RoZXI6dDBrZW4=", "dev", "may not switch"},  // other:t0ken on a connection of dev
    };
    for (const auto& c : refused) {
        SCOPED_TRACE(std::string(c.header.value_or("(none)")));
        const auto result = explicit_login(*config, c.header, c.bound);
        ASSERT_TRUE(std::holds_alternative<Refusal>(result));
        const auto& refusal = std::get<Refusal>(result);
        EXPECT_EQ(refusal.status, 407u);
        EXPECT_EQ(refusal.error, "proxy_authentication_required");
        EXPECT_NE(refusal.reason.find(c.reason), std::string::npos) << refusal.reason;
        ASSERT_EQ(refusal.headers.size(), 1u);
        EXPECT_EQ(refusal.headers[0].first, "Proxy-Authenticate");
    }
}

TEST(ConnectGate, TakesHostAndPortWithNothingSentBeforeTheReply) {
    const auto ok = gate_connect("API.github.com:443", 0);
    ASSERT_TRUE(std::holds_alternative<TunnelTarget>(ok));
    EXPECT_EQ(std::get<TunnelTarget>(ok).host, "api.github.com");
    EXPECT_EQ(std::get<TunnelTarget>(ok).port, 443);
    for (const auto& [target, early] : {std::pair{"api.github.com", 0}, {"api.github.com:443", 5}, {":443", 0}}) {
        SCOPED_TRACE(target);
        const auto refused = gate_connect(target, static_cast<std::size_t>(early));
        ASSERT_TRUE(std::holds_alternative<Refusal>(refused));
        EXPECT_EQ(std::get<Refusal>(refused).status, 400u);
        EXPECT_NE(std::get<Refusal>(refused).reason.find("CONNECT needs host:port"), std::string::npos);
    }
    EXPECT_EQ(std::get<Refusal>(gate_connect("api.github.com:443", 5)).host, "api.github.com");
}

}  // namespace
}  // namespace tameflare::proxy::stage
