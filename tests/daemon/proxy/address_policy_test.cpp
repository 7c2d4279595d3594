// Upstream destinations: what counts as internal, including IPv4 hidden in
// IPv6, and what a configured CIDR lets through.
#include "daemon/proxy/address_policy.h"

#include <gtest/gtest.h>

namespace tameflare::proxy {
namespace {

AddressClass class_of(const char* text) {
    const auto address = IpAddress::parse(text);
    EXPECT_TRUE(address) << text;
    return address ? classify(*address) : AddressClass::reserved;
}

TEST(AddressPolicy, ClassifiesTheSpecialIpv4Ranges) {
    EXPECT_EQ(class_of("127.0.0.1"), AddressClass::loopback);
    EXPECT_EQ(class_of("127.255.0.9"), AddressClass::loopback);
    EXPECT_EQ(class_of("10.1.2.3"), AddressClass::private_net);
    EXPECT_EQ(class_of("172.16.0.1"), AddressClass::private_net);
    EXPECT_EQ(class_of("172.31.255.255"), AddressClass::private_net);
    EXPECT_EQ(class_of("172.32.0.1"), AddressClass::global);
    EXPECT_EQ(class_of("192.168.1.1"), AddressClass::private_net);
    EXPECT_EQ(class_of("169.254.169.254"), AddressClass::link_local);  // cloud metadata
    EXPECT_EQ(class_of("100.64.0.1"), AddressClass::shared);
    EXPECT_EQ(class_of("0.0.0.0"), AddressClass::unspecified);
    EXPECT_EQ(class_of("224.0.0.1"), AddressClass::multicast);
    EXPECT_EQ(class_of("255.255.255.255"), AddressClass::multicast);
    EXPECT_EQ(class_of("240.0.0.1"), AddressClass::reserved);
    EXPECT_EQ(class_of("192.0.2.10"), AddressClass::reserved);
    EXPECT_EQ(class_of("140.82.112.6"), AddressClass::global);
    EXPECT_EQ(class_of("8.8.8.8"), AddressClass::global);
}

TEST(AddressPolicy, ClassifiesTheSpecialIpv6Ranges) {
    EXPECT_EQ(class_of("::1"), AddressClass::loopback);
    EXPECT_EQ(class_of("::"), AddressClass::unspecified);
    EXPECT_EQ(class_of("fd12:3456::1"), AddressClass::private_net);
    EXPECT_EQ(class_of("fe80::1"), AddressClass::link_local);
    EXPECT_EQ(class_of("ff02::1"), AddressClass::multicast);
    EXPECT_EQ(class_of("2001:db8::1"), AddressClass::reserved);
    EXPECT_EQ(class_of("[2606:4700::6810:84e5]"), AddressClass::global);
}

TEST(AddressPolicy, JudgesIpv4HiddenInIpv6ByTheIpv4Address) {
    EXPECT_EQ(class_of("::ffff:127.0.0.1"), AddressClass::loopback);
    EXPECT_EQ(class_of("::ffff:169.254.169.254"), AddressClass::link_local);
    EXPECT_EQ(class_of("64:ff9b::10.0.0.1"), AddressClass::private_net);
    EXPECT_EQ(class_of("2002:7f00:1::"), AddressClass::loopback);  // 6to4 of 127.0.0.1
    EXPECT_EQ(class_of("::192.168.0.1"), AddressClass::private_net);
    EXPECT_EQ(class_of("::ffff:140.82.112.6"), AddressClass::global);
}

TEST(AddressPolicy, RefusesInternalDestinationsUnlessConfigured) {
    const auto loopback = *IpAddress::parse("127.0.0.7");
    const auto mapped = *IpAddress::parse("::ffff:127.0.0.7");
    const auto public_address = *IpAddress::parse("140.82.112.6");
    EXPECT_TRUE(upstream_allowed(public_address, {}));
    EXPECT_FALSE(upstream_allowed(loopback, {}));
    EXPECT_FALSE(upstream_allowed(mapped, {}));
    const std::vector<Cidr> allowed{*Cidr::parse("127.0.0.7")};
    EXPECT_TRUE(upstream_allowed(loopback, allowed));
    EXPECT_TRUE(upstream_allowed(mapped, allowed));  // the IPv4 rule covers its IPv6 forms
    EXPECT_FALSE(upstream_allowed(*IpAddress::parse("127.0.0.8"), allowed));
    EXPECT_TRUE(upstream_allowed(*IpAddress::parse("10.9.8.7"), {*Cidr::parse("10.0.0.0/8")}));
    EXPECT_FALSE(upstream_allowed(*IpAddress::parse("192.168.0.1"), {*Cidr::parse("10.0.0.0/8")}));
}

TEST(AddressPolicy, ParsesAndRefusesCidrs) {
    EXPECT_TRUE(Cidr::parse("10.0.0.0/8"));
    EXPECT_TRUE(Cidr::parse("fd00::/8"));
    EXPECT_EQ(Cidr::parse("127.0.0.1")->prefix, 32U);
    EXPECT_EQ(Cidr::parse("::1")->prefix, 128U);
    EXPECT_FALSE(Cidr::parse("10.0.0.0/33"));
    EXPECT_FALSE(Cidr::parse("fd00::/129"));
    EXPECT_FALSE(Cidr::parse("10.0.0.0/"));
    EXPECT_FALSE(Cidr::parse("10.0.0.0/-1"));
    EXPECT_FALSE(Cidr::parse("10.0.0/8"));
    EXPECT_FALSE(Cidr::parse("api.github.com/32"));
    EXPECT_TRUE(Cidr::parse("172.16.0.0/12")->contains(*IpAddress::parse("172.20.1.1")));
    EXPECT_FALSE(Cidr::parse("172.16.0.0/12")->contains(*IpAddress::parse("172.32.0.1")));
    EXPECT_TRUE(Cidr::parse("0.0.0.0/0")->contains(*IpAddress::parse("1.2.3.4")));
    EXPECT_FALSE(Cidr::parse("0.0.0.0/0")->contains(*IpAddress::parse("::1")));  // families never mix
}

TEST(AddressPolicy, PrintsAddressesCanonically) {
    EXPECT_EQ(IpAddress::parse("127.000.000.001"), std::nullopt);  // no octal-looking forms
    EXPECT_EQ(IpAddress::parse("2001:DB8:0:0::1")->to_string(), "2001:db8::1");
    EXPECT_EQ(IpAddress::parse("10.0.0.1")->to_string(), "10.0.0.1");
    EXPECT_FALSE(IpAddress::parse("localhost"));
    EXPECT_FALSE(IpAddress::parse("1.2.3"));
}

}  // namespace
}  // namespace tameflare::proxy
