// The data plane's messages (daemon/dataplane/protocol.h): every message
// survives its encoding field for field, every truncation is refused, the
// policy crosses in parts and is put together only in order, and values a
// hostile data plane could send (impossible levels, lists longer than their
// frame) are refused with where they went wrong.
#include "daemon/dataplane/protocol.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::dataplane {
namespace {

using namespace std::chrono_literals;

template <typename Message>
Message round_trip(const Message& message) {
    const ipc::Frame frame{static_cast<std::uint16_t>(Message::kType), 9, ipc::encode(message), {}};
    return ipc::decode<Message>(frame);
}

// Every cut of the message's bytes is refused.
template <typename Message>
void every_truncation_refused(const Message& message) {
    const auto bytes = ipc::encode(message);
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        const ipc::Frame frame{static_cast<std::uint16_t>(Message::kType), 0, bytes.substr(0, length), {}};
        EXPECT_THROW(ipc::decode<Message>(frame), ipc::DecodeError) << "cut to " << length << " bytes";
    }
}

proxy::TrafficRecord record() {
    proxy::TrafficRecord out;
    out.time = std::chrono::system_clock::time_point(1765100000123456us);
    out.request_id = "req-1";
    out.gateway = "ci";
    out.agent = "agent-7";
    out.connector = "github";
    out.action = "github.pr.merge";
    out.method = "PUT";
    out.host = "api.github.com";
    out.path = "/repos/o/r/pulls/1/merge?token=[redacted]";
    out.decision = "allowed";
    out.reason = "rule 3";
    out.status = 200;
    out.request_bytes = 1234;
    out.response_bytes = 1ULL << 40;
    out.latency = 5123us;
    out.overhead = 321us;
    out.forwarded = true;
    return out;
}

void expect_same(const proxy::TrafficRecord& a, const proxy::TrafficRecord& b) {
    EXPECT_EQ(a.time, b.time);
    EXPECT_EQ(a.request_id, b.request_id);
    EXPECT_EQ(a.gateway, b.gateway);
    EXPECT_EQ(a.agent, b.agent);
    EXPECT_EQ(a.connector, b.connector);
    EXPECT_EQ(a.action, b.action);
    EXPECT_EQ(a.method, b.method);
    EXPECT_EQ(a.host, b.host);
    EXPECT_EQ(a.path, b.path);
    EXPECT_EQ(a.decision, b.decision);
    EXPECT_EQ(a.reason, b.reason);
    EXPECT_EQ(a.status, b.status);
    EXPECT_EQ(a.request_bytes, b.request_bytes);
    EXPECT_EQ(a.response_bytes, b.response_bytes);
    EXPECT_EQ(a.latency, b.latency);
    EXPECT_EQ(a.overhead, b.overhead);
    EXPECT_EQ(a.forwarded, b.forwarded);
}

TEST(DataPlaneProtocol, RecordsAndCommitsCrossFieldForField) {
    const auto records = round_trip(Records{{record(), proxy::TrafficRecord{}, record()}});
    ASSERT_EQ(records.records.size(), 3u);
    expect_same(records.records[0], record());
    expect_same(records.records[1], proxy::TrafficRecord{});
    expect_same(round_trip(Commit{record()}).record, record());
    every_truncation_refused(Commit{record()});
    EXPECT_EQ(round_trip(Committed{"disk full"}).error, "disk full");
}

TEST(DataPlaneProtocol, ApprovalsCrossBothWays) {
    const proxy::ApprovalRequest request{"a1",
                                         "ci",
                                         "agent-7",
                                         "github",
                                         "github.pr.merge",
                                         "high",
                                         R"({"pull": 1})",
                                         "needs a human",
                                         std::chrono::system_clock::time_point(1765100000s),
                                         300s};
    const auto submitted = round_trip(Submit{request}).request;
    EXPECT_EQ(submitted.id, "a1");
    EXPECT_EQ(submitted.parameters, R"({"pull": 1})");
    EXPECT_EQ(submitted.requested_at, request.requested_at);
    EXPECT_EQ(submitted.timeout, 300s);
    every_truncation_refused(Submit{request});
    const auto answer = round_trip(Answer{"a1", {true, "ok", "uid:1000 pid:4 via D-Bus"}});
    EXPECT_EQ(answer.id, "a1");
    EXPECT_TRUE(answer.answer.approved);
    EXPECT_EQ(answer.answer.actor, "uid:1000 pid:4 via D-Bus");
    EXPECT_EQ(round_trip(Withdraw{"a1"}).id, "a1");
}

TEST(DataPlaneProtocol, TheRestCrossesToo) {
    const auto kill = round_trip(KillSwitch{false, {"ci", "dev"}, {"github"}});
    EXPECT_FALSE(kill.all);
    EXPECT_EQ(kill.gateways, (std::vector<std::string>{"ci", "dev"}));
    EXPECT_EQ(kill.connectors, std::vector<std::string>{"github"});
    const auto agent = round_trip(RegisterAgent{42, "ci", "agent-7", true, false, true});
    EXPECT_EQ(agent.tag, 42u);
    EXPECT_EQ(agent.agent, "agent-7");
    EXPECT_TRUE(agent.listener);
    EXPECT_FALSE(agent.dns_udp);
    EXPECT_TRUE(agent.dns_tcp);
    const auto origin = round_trip(OriginAnswer{true, *Endpoint::parse("140.82.112.3:443"), 42});
    EXPECT_TRUE(origin.found);
    EXPECT_EQ(origin.destination.to_string(), "140.82.112.3:443");
    EXPECT_EQ(origin.agent, 42u);
    const auto asked = round_trip(OriginRequest{7, *Endpoint::parse("[::1]:40000")});
    EXPECT_EQ(asked.netns_cookie, 7u);
    EXPECT_EQ(asked.client.to_string(), "[::1]:40000");
    EXPECT_EQ(round_trip(UnregisterAgent{42}).tag, 42u);
    const auto credential = round_trip(Credential{true, "ghp_secret"});
    EXPECT_TRUE(credential.found);
    EXPECT_EQ(credential.value, "ghp_secret");
    EXPECT_EQ(round_trip(CredentialRequest{"github"}).name, "github");
    const auto leaf = round_trip(SignLeaf{"api.github.com", std::string("\x30\x59\x00\x01", 4)});
    EXPECT_EQ(leaf.public_key.size(), 4u);
    EXPECT_EQ(round_trip(Leaf{"DER", ""}).certificate, "DER");
    const auto counters = round_trip(Counters{1, 2, 3, 4});
    EXPECT_EQ(counters.held, 4u);
    EXPECT_EQ(round_trip(Counters{1, 2, 3, 4}).connections_total, 2u);
    round_trip(StopAccepting{});
    round_trip(CountersRequest{});
    Writer endpoint;
    write(endpoint, *Endpoint::parse("[::1]:15080"));
    Reader in(endpoint.bytes());
    EXPECT_EQ(read_endpoint(in).to_string(), "[::1]:15080");
}

TEST(DataPlaneProtocol, TheProxysOptionsCrossAsDataAndBadAddressesAreRefused) {
    proxy::ProxyOptions options;
    options.threads = 3;
    options.max_body_bytes = 4096;
    options.allowed_upstreams = {*Cidr::parse("10.1.0.0/16"), *Cidr::parse("fd00::/8")};
    options.upstream_ca_file = "/etc/tameflare/upstream-ca.pem";
    options.hosts["api.github.com"] = {*IpAddress::parse("127.0.0.5"), *IpAddress::parse("::1")};
    options.system_resolver = false;
    options.client_idle_timeout = 30s;
    options.upstream_timeout = 60s;
    options.server_first_wait = 250ms;
    auto start = Start::from(options);
    start.transparent = true;
    start.origin_map = true;
    const auto read = round_trip(start);
    EXPECT_TRUE(read.transparent);
    EXPECT_FALSE(read.explicit_proxy);
    EXPECT_FALSE(read.upstream_ca);
    EXPECT_TRUE(read.origin_map);
    const auto back = read.options();
    EXPECT_EQ(back.threads, 3u);
    EXPECT_EQ(back.max_body_bytes, 4096u);
    ASSERT_EQ(back.allowed_upstreams.size(), 2u);
    EXPECT_TRUE(back.allowed_upstreams[0].contains(*IpAddress::parse("10.1.2.3")));
    EXPECT_FALSE(back.allowed_upstreams[0].contains(*IpAddress::parse("10.2.0.1")));
    EXPECT_TRUE(back.allowed_upstreams[1].contains(*IpAddress::parse("fd12::1")));
    EXPECT_TRUE(back.upstream_ca_file.empty());  // its descriptor goes with Start, not its name
    EXPECT_EQ(back.hosts, options.hosts);
    EXPECT_FALSE(back.system_resolver);
    EXPECT_EQ(back.client_idle_timeout, 30s);
    EXPECT_EQ(back.upstream_timeout, 60s);
    EXPECT_EQ(back.server_first_wait, 250ms);
    every_truncation_refused(start);

    auto bad = Start::from(options);
    bad.allowed_upstreams.emplace_back("10.0.0.0/99");
    EXPECT_THROW((void)round_trip(bad).options(), ipc::DecodeError);
    bad = Start::from(options);
    bad.hosts.emplace_back("evil.example", std::vector<std::string>{"not-an-address"});
    EXPECT_THROW((void)round_trip(bad).options(), ipc::DecodeError);
}

TEST(DataPlaneProtocol, ThePolicyCrossesInPartsPutTogetherOnlyInOrder) {
    PolicyDocuments documents;
    documents.connectors.push_back({"/usr/share/tameflare/connectors/github.json", std::string(250000, 'g')});
    documents.gateways.push_back({"/etc/tameflare/gateways.d/ci.json", R"({"name": "ci"})"});
    documents.overrides.emplace_back("ci", policy::Enforcement::soft);
    const auto blob = encode(documents);
    const auto parts = split_policy(7, blob);
    ASSERT_EQ(parts.size(), 3u);
    for (const auto& part : parts) EXPECT_LE(ipc::encode(part).size() + ipc::kFrameHeader, ipc::kMaxFrame);

    PolicyAssembly assembly;
    EXPECT_FALSE(assembly.add(round_trip(parts[0])));
    EXPECT_FALSE(assembly.add(round_trip(parts[1])));
    const auto whole = assembly.add(round_trip(parts[2]));
    ASSERT_TRUE(whole);
    EXPECT_EQ(decode_policy(*whole), documents);

    // Out of order, or a part of another generation: refused, and the next policy starts clean.
    EXPECT_FALSE(assembly.add(parts[0]));
    EXPECT_THROW(assembly.add(parts[2]), ipc::DecodeError);
    EXPECT_FALSE(assembly.add(parts[0]));
    auto stray = parts[1];
    stray.generation = 8;
    EXPECT_THROW(assembly.add(stray), ipc::DecodeError);
    EXPECT_THROW(assembly.add(PolicyPart{7, 0, 0, ""}), ipc::DecodeError);
    const auto empty = split_policy(9, encode(PolicyDocuments{}));
    ASSERT_EQ(empty.size(), 1u);
    EXPECT_EQ(decode_policy(*PolicyAssembly().add(empty[0])), PolicyDocuments{});
}

TEST(DataPlaneProtocol, ValuesNoHonestPeerSendsAreRefused) {
    PolicyDocuments documents;
    documents.overrides.emplace_back("ci", policy::Enforcement::full);
    auto blob = encode(documents);
    blob.back() = 9;  // an enforcement level that does not exist
    EXPECT_THROW(decode_policy(blob), ipc::DecodeError);
    EXPECT_THROW(decode_policy(encode(documents) + "x"), ipc::DecodeError);

    // Times and durations that would overflow the clocks, and a negative wait.
    for (const auto& [offset, value] : {std::pair<std::size_t, std::int64_t>{0, INT64_MAX}, {0, INT64_MIN}}) {
        auto bytes = ipc::encode(Commit{record()});
        for (int i = 0; i < 8; ++i)
            bytes[offset + i] = static_cast<char>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xFFU);
        const ipc::Frame frame{static_cast<std::uint16_t>(Type::commit), 0, bytes, {}};
        EXPECT_THROW(ipc::decode<Commit>(frame), ipc::DecodeError) << value;
    }
    auto negative = record();
    negative.latency = std::chrono::microseconds(-1);
    const ipc::Frame backwards{static_cast<std::uint16_t>(Type::commit), 0, ipc::encode(Commit{negative}), {}};
    EXPECT_THROW(ipc::decode<Commit>(backwards), ipc::DecodeError);
    proxy::ApprovalRequest forever{};
    forever.timeout = std::chrono::seconds(-5);
    const ipc::Frame never{static_cast<std::uint16_t>(Type::submit), 0, ipc::encode(Submit{forever}), {}};
    EXPECT_THROW(ipc::decode<Submit>(never), ipc::DecodeError);

    // A list that claims more records than its frame could hold.
    Writer lying;
    lying.u32(4000);
    lying.u64(0);
    const ipc::Frame frame{static_cast<std::uint16_t>(Type::records), 0, lying.bytes(), {}};
    EXPECT_THROW(ipc::decode<Records>(frame), ipc::DecodeError);
    Writer too_many;
    too_many.u32(static_cast<std::uint32_t>(kMaxList + 1));
    const ipc::Frame long_frame{static_cast<std::uint16_t>(Type::records), 0, too_many.bytes(), {}};
    EXPECT_THROW(ipc::decode<Records>(long_frame), ipc::DecodeError);
}

}  // namespace
}  // namespace tameflare::dataplane
