// The agreed destination, without sockets: where a request may be sent.
// (Pure: the addresses below are values only, nothing is dialed.)
#include "daemon/proxy/stage/destination.h"

#include <gtest/gtest.h>

namespace tameflare::proxy::stage {
namespace {

IpAddress ip(const char* text) {
    return *IpAddress::parse(text);
}

using Result = std::variant<std::vector<IpAddress>, DestinationRefusal>;

std::vector<IpAddress> agreed(const Result& result) {
    if (const auto* refusal = std::get_if<DestinationRefusal>(&result)) {
        ADD_FAILURE() << "refused: " << refusal->reason;
        return {};
    }
    return std::get<std::vector<IpAddress>>(result);
}

DestinationRefusal refused(const Result& result) {
    if (!std::holds_alternative<DestinationRefusal>(result)) {
        ADD_FAILURE() << "agreed on " << std::get<std::vector<IpAddress>>(result).size() << " addresses";
        return {};
    }
    return std::get<DestinationRefusal>(result);
}

const std::vector<Cidr> kNone;
const std::vector<Cidr> kLoopback{*Cidr::parse("127.0.0.0/8")};
const IpAddress kGlobal4 = ip("93.184.216.34");
const IpAddress kGlobal6 = ip("2606:2800:220:1::1");

TEST(AgreeDestination, ThroughTheExplicitProxyEveryAllowedAddressOfTheNameInOrder) {
    const auto addresses = agreed(agree_destination("h.test", {kGlobal6, kGlobal4}, std::nullopt, kNone));
    ASSERT_EQ(addresses.size(), 2u);
    EXPECT_EQ(addresses[0], kGlobal6);
    EXPECT_EQ(addresses[1], kGlobal4);
}

TEST(AgreeDestination, ARedirectedConnectionGoesWhereTheAgentDialedOnly) {
    const auto addresses = agreed(agree_destination("h.test", {kGlobal6, kGlobal4}, kGlobal4, kNone));
    ASSERT_EQ(addresses.size(), 1u);
    EXPECT_EQ(addresses[0], kGlobal4);
}

TEST(AgreeDestination, AnAddressThatIsNotTheNamesIsRefusedAndTheConnectionNotKept) {
    const auto refusal = refused(agree_destination("h.test", {kGlobal4}, ip("93.184.216.35"), kNone));
    EXPECT_EQ(refusal.reason, "the agent connected to 93.184.216.35, which is not an address of \"h.test\"");
    EXPECT_FALSE(refusal.keep_connection);
    // Nothing resolved: nothing agrees.
    EXPECT_FALSE(refused(agree_destination("h.test", {}, kGlobal4, kNone)).keep_connection);
}

TEST(AgreeDestination, LoopbackPrivateAndLinkLocalNeedAllowedUpstreams) {
    for (const char* inner :
         {"127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fd00::1", "0.0.0.0"}) {
        SCOPED_TRACE(inner);
        const auto through_explicit = refused(agree_destination("h.test", {ip(inner)}, std::nullopt, kNone));
        EXPECT_NE(through_explicit.reason.find("must be listed in allowed_upstreams"), std::string::npos);
        EXPECT_NE(through_explicit.reason.find("no global address"), std::string::npos) << through_explicit.reason;
        EXPECT_TRUE(through_explicit.keep_connection);
        const auto dialed = refused(agree_destination("h.test", {ip(inner)}, ip(inner), kNone));
        EXPECT_EQ(dialed.reason.find("no global address"), std::string::npos) << dialed.reason;  // names the class
    }
    const auto mixed = agreed(agree_destination("h.test", {ip("10.0.0.1"), kGlobal4}, std::nullopt, kNone));
    ASSERT_EQ(mixed.size(), 1u);
    EXPECT_EQ(mixed[0], kGlobal4);
    const auto allowed = agreed(agree_destination("h.test", {ip("127.0.0.12")}, ip("127.0.0.12"), kLoopback));
    ASSERT_EQ(allowed.size(), 1u);
    EXPECT_EQ(allowed[0], ip("127.0.0.12"));
    EXPECT_FALSE(refused(agree_destination("h.test", {ip("10.0.0.1")}, std::nullopt, kLoopback)).reason.empty());
}

}  // namespace
}  // namespace tameflare::proxy::stage
