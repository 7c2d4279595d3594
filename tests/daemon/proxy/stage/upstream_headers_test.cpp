// The request's headers as they go upstream, without sockets.
#include "daemon/proxy/stage/upstream_headers.h"

#include <gtest/gtest.h>

#include <string>

namespace tameflare::proxy::stage {
namespace {

namespace http = boost::beast::http;

std::string get(const http::fields& fields, std::string_view name) {
    const auto it = fields.find(boost::beast::string_view(name.data(), name.size()));
    return it == fields.end() ? std::string("(none)") : std::string(it->value());
}

http::fields agent_headers() {
    http::fields fields;
    fields.set("Host", "api.github.com");
    fields.set("Authorization", "token agent-own");
    fields.set("X-Api-Key", "agent-key");
    fields.set("Proxy-Authorization", "Basic ZGV2OnMzY3JldA==");
    fields.set("Proxy-Connection", "keep-alive");
    fields.set("Keep-Alive", "timeout=5");
    fields.set("TE", "trailers");
    fields.set("Trailer", "X-Checksum");
    fields.set("Connection", "keep-alive, X-Private-Hop");
    fields.set("X-Private-Hop", "1");
    fields.set("X-TameFlare-Decision", "allowed");  // the agent may not speak for the proxy
    fields.set("x-tameflare-request-id", "forged");
    fields.set("Expect", "100-continue");
    fields.set("Accept", "application/json");
    return fields;
}

TEST(UpstreamHeaders, TheVaultsCredentialReplacesTheAgentsAndHopHeadersStay) {
    auto fields = agent_headers();
    rewrite_upstream_headers(fields, {{{"X-Api-Key", "vault-key"}}, false, true, true, "r-1"});
    EXPECT_EQ(get(fields, "Authorization"), "(none)");  // whatever the connector's header, Authorization goes
    EXPECT_EQ(get(fields, "X-Api-Key"), "vault-key");
    for (const char* gone : {"Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "TE", "Trailer", "X-Private-Hop",
                             "X-TameFlare-Decision", "Connection", "Expect"}) {
        EXPECT_EQ(get(fields, gone), "(none)") << gone;
    }
    EXPECT_EQ(get(fields, "X-TameFlare-Request-Id"), "r-1");
    EXPECT_EQ(get(fields, "Accept"), "application/json");
    EXPECT_EQ(get(fields, "Host"), "api.github.com");
}

TEST(UpstreamHeaders, WithoutACredentialTheAgentsOwnPassesAndExpectStaysUnlessAnswered) {
    auto fields = agent_headers();
    rewrite_upstream_headers(fields, {std::nullopt, false, true, false, "r-2"});
    EXPECT_EQ(get(fields, "Authorization"), "token agent-own");
    EXPECT_EQ(get(fields, "Expect"), "100-continue");
    EXPECT_EQ(get(fields, "Proxy-Authorization"), "(none)");
}

TEST(UpstreamHeaders, TheConnectionHeaderSaysCloseOrUpgradeAsTheExchangeNeeds) {
    auto closing = agent_headers();
    rewrite_upstream_headers(closing, {std::nullopt, false, false, false, "r-3"});
    EXPECT_EQ(get(closing, "Connection"), "close");

    http::fields upgrade;
    upgrade.set("Connection", "Upgrade");
    upgrade.set("Upgrade", "websocket");
    rewrite_upstream_headers(upgrade, {std::nullopt, true, true, false, "r-4"});
    EXPECT_EQ(get(upgrade, "Connection"), "Upgrade");
    EXPECT_EQ(get(upgrade, "Upgrade"), "websocket");

    http::fields smuggled;  // an Upgrade header without an upgrade is not passed on
    smuggled.set("Upgrade", "h2c");
    rewrite_upstream_headers(smuggled, {std::nullopt, false, true, false, "r-5"});
    EXPECT_EQ(get(smuggled, "Upgrade"), "(none)");
    EXPECT_EQ(get(smuggled, "Connection"), "(none)");
}

}  // namespace
}  // namespace tameflare::proxy::stage
