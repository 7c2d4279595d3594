// DNS packet logic: queries built with ldns and by hand, responses parsed
// back with ldns.
#include "daemon/dns/dns_message.h"

#include <gtest/gtest.h>
#include <ldns/ldns.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace tameflare::dns {
namespace {

using proxy::IpAddress;
using Bytes = std::vector<std::uint8_t>;

struct PktDeleter {
    void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct FreeDeleter {
    void operator()(void* memory) const { std::free(memory); }  // NOLINT(cppcoreguidelines-no-malloc)
};
using PktPtr = std::unique_ptr<ldns_pkt, PktDeleter>;

struct QueryOptions {
    std::uint16_t id = 0x1234;
    bool rd = true;
    int edns_size = -1;  // -1: no OPT
};

Bytes build_query(const std::string& name, ldns_rr_type type, QueryOptions options = {}) {
    ldns_rdf* owner = ldns_dname_new_frm_str(name.c_str());
    if (owner == nullptr) throw std::runtime_error("bad name " + name);
    // ldns_pkt_query_new takes the name.
    const PktPtr pkt(ldns_pkt_query_new(owner, type, LDNS_RR_CLASS_IN, options.rd ? LDNS_RD : 0));
    ldns_pkt_set_id(pkt.get(), options.id);
    if (options.edns_size >= 0) ldns_pkt_set_edns_udp_size(pkt.get(), static_cast<std::uint16_t>(options.edns_size));
    std::uint8_t* raw = nullptr;
    std::size_t size = 0;
    const auto status = ldns_pkt2wire(&raw, pkt.get(), &size);
    const std::unique_ptr<std::uint8_t, FreeDeleter> owned(raw);
    if (status != LDNS_STATUS_OK) throw std::runtime_error("pkt2wire failed");
    return {raw, raw + size};
}

PktPtr parse_response(const Bytes& bytes) {
    ldns_pkt* raw = nullptr;
    const auto status = ldns_wire2pkt(&raw, bytes.data(), bytes.size());
    PktPtr pkt(raw);
    if (status != LDNS_STATUS_OK) ADD_FAILURE() << "ldns cannot parse the response";
    return pkt;
}

std::string owner_text(const ldns_rr* rr) {
    const std::unique_ptr<char, FreeDeleter> text(ldns_rdf2str(ldns_rr_owner(rr)));
    return text.get();
}

std::string rdata_text(const ldns_rr* rr) {
    const std::unique_ptr<char, FreeDeleter> text(ldns_rdf2str(ldns_rr_rdf(rr, 0)));
    return text.get();
}

// A query for "a.b" type A, built by hand: header then question.
Bytes hand_query() {
    return {0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // id, RD, QDCOUNT=1
            0x01, 'a',  0x01, 'b',  0x00, 0x00, 0x01, 0x00, 0x01};                   // a.b A IN
}

Bytes with_name(const Bytes& name_wire) {
    Bytes packet{0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    packet.insert(packet.end(), name_wire.begin(), name_wire.end());
    packet.insert(packet.end(), {0x00, 0x01, 0x00, 0x01});
    return packet;
}

Bytes name_of_labels(const std::vector<std::size_t>& lengths) {
    Bytes wire;
    for (const auto length : lengths) {
        wire.push_back(static_cast<std::uint8_t>(length));
        wire.insert(wire.end(), length, 'x');
    }
    wire.push_back(0);
    return wire;
}

IpAddress ip(const char* text) {
    return IpAddress::parse(text).value();
}

TEST(DnsMessage, ParsesAnLdnsQuery) {
    const auto query = parse_query(build_query("API.GitHub.com.", LDNS_RR_TYPE_AAAA));
    ASSERT_TRUE(query);
    EXPECT_EQ(query->id, 0x1234);
    EXPECT_TRUE(query->recursion_desired);
    EXPECT_EQ(query->question.name, "api.github.com");
    EXPECT_EQ(query->question.type, kTypeAaaa);
    EXPECT_EQ(query->question.klass, kClassIn);
    EXPECT_FALSE(query->has_edns);
    EXPECT_TRUE(query->edns.empty());
    EXPECT_EQ(query->udp_size, 512);
    // The name as sent, case kept.
    const Bytes expected{3, 'A', 'P', 'I', 6, 'G', 'i', 't', 'H', 'u', 'b', 3, 'c', 'o', 'm', 0};
    EXPECT_EQ(query->wire_name, expected);
}

TEST(DnsMessage, ParsesAHandBuiltQuery) {
    const auto query = parse_query(hand_query());
    ASSERT_TRUE(query);
    EXPECT_EQ(query->id, 0xabcd);
    EXPECT_TRUE(query->recursion_desired);
    EXPECT_EQ(query->question.name, "a.b");
    EXPECT_EQ(query->question.type, kTypeA);

    auto no_rd = hand_query();
    no_rd[2] = 0x00;
    ASSERT_TRUE(parse_query(no_rd));
    EXPECT_FALSE(parse_query(no_rd)->recursion_desired);

    auto class_any = hand_query();
    class_any[20] = 0xff;
    ASSERT_TRUE(parse_query(class_any));
    EXPECT_EQ(parse_query(class_any)->question.klass, kClassAny);
}

TEST(DnsMessage, KeepsTheEdnsUdpSizeWithinBounds) {
    auto query = parse_query(build_query("a.example", LDNS_RR_TYPE_A, {.edns_size = 1400}));
    ASSERT_TRUE(query);
    EXPECT_TRUE(query->has_edns);
    EXPECT_EQ(query->udp_size, 1400);
    query = parse_query(build_query("a.example", LDNS_RR_TYPE_A, {.edns_size = 100}));
    ASSERT_TRUE(query);
    EXPECT_EQ(query->udp_size, 512);
    query = parse_query(build_query("a.example", LDNS_RR_TYPE_A, {.edns_size = 65000}));
    ASSERT_TRUE(query);
    EXPECT_EQ(query->udp_size, 4096);
}

TEST(DnsMessage, KeepsEdnsOptions) {
    // OPT with one option: code 10 (cookie), 8 bytes.
    Bytes packet = hand_query();
    packet[11] = 1;  // ARCOUNT=1
    const Bytes opt{0x00, 0x00, 0x29, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00,
                    0x0a, 0x00, 0x08, 1,    2,    3,    4,    5,    6,    7,    8};
    packet.insert(packet.end(), opt.begin(), opt.end());
    const auto query = parse_query(packet);
    ASSERT_TRUE(query);
    EXPECT_TRUE(query->has_edns);
    EXPECT_EQ(query->udp_size, 4096);
    EXPECT_EQ(query->edns.size(), 12U);
}

TEST(DnsMessage, RefusesWhatIsNotOneStandardQuery) {
    const Bytes base = hand_query();
    EXPECT_FALSE(parse_query(Bytes{}));
    EXPECT_FALSE(parse_query(Bytes(base.begin(), base.begin() + 11))) << "truncated header";
    EXPECT_FALSE(parse_query(Bytes(base.begin(), base.begin() + 12))) << "header only";
    EXPECT_FALSE(parse_query(Bytes(base.begin(), base.end() - 2))) << "question cut short";

    auto qd0 = base;
    qd0[5] = 0;
    EXPECT_FALSE(parse_query(qd0)) << "QDCOUNT 0";

    auto qd2 = base;
    qd2[5] = 2;
    qd2.insert(qd2.end(), base.begin() + 12, base.end());
    EXPECT_FALSE(parse_query(qd2)) << "QDCOUNT 2";

    auto response = base;
    response[2] |= 0x80U;
    EXPECT_FALSE(parse_query(response)) << "QR=1";

    auto status = base;
    status[2] |= 0x10U;  // opcode 2
    EXPECT_FALSE(parse_query(status)) << "opcode STATUS";
    auto notify = base;
    notify[2] |= 0x20U;  // opcode 4
    EXPECT_FALSE(parse_query(notify)) << "opcode NOTIFY";

    auto with_answer = base;
    with_answer[7] = 1;
    EXPECT_FALSE(parse_query(with_answer)) << "ANCOUNT 1";
    auto with_authority = base;
    with_authority[9] = 1;
    EXPECT_FALSE(parse_query(with_authority)) << "NSCOUNT 1";

    auto chaos = base;
    chaos[20] = 3;
    EXPECT_FALSE(parse_query(chaos)) << "class CH";

    // A pointer at offset 12 pointing to itself: a loop.
    EXPECT_FALSE(parse_query(with_name({0xc0, 0x0c}))) << "compression loop";
    // Two pointers pointing at each other.
    EXPECT_FALSE(parse_query(with_name({0x01, 'a', 0xc0, 0x0c}))) << "compression loop via a label";
    EXPECT_FALSE(parse_query(with_name({0xc0, 0xff}))) << "pointer past the end";
    EXPECT_FALSE(parse_query(with_name(name_of_labels({64})))) << "label of 64";
    EXPECT_TRUE(parse_query(with_name(name_of_labels({63}))));
    EXPECT_FALSE(parse_query(with_name({0x41, 'a'}))) << "extended label type";
}

TEST(DnsMessage, NameLengthLimitIs253) {
    const auto longest = parse_query(with_name(name_of_labels({63, 63, 63, 61})));
    ASSERT_TRUE(longest);
    EXPECT_EQ(longest->question.name.size(), 253U);
    EXPECT_FALSE(parse_query(with_name(name_of_labels({63, 63, 63, 62})))) << "254 characters";
}

TEST(DnsMessage, IgnoresTrailingBytes) {
    // Decided: tolerated (common servers do); they are never echoed.
    auto packet = hand_query();
    packet.insert(packet.end(), {0xde, 0xad, 0xbe, 0xef});
    const auto query = parse_query(packet);
    ASSERT_TRUE(query);
    EXPECT_EQ(query->question.name, "a.b");
    const auto response = refused(*query);
    EXPECT_EQ(response.size(), hand_query().size());
}

TEST(DnsMessage, AnswersAWithRecordsOfTheFamily) {
    const auto query = parse_query(build_query("Api.GitHub.com", LDNS_RR_TYPE_A, {.id = 77}));
    ASSERT_TRUE(query);
    const auto bytes = answer(*query, {ip("203.0.113.7"), ip("2001:db8::7"), ip("203.0.113.8")}, 30);
    const auto pkt = parse_response(bytes);
    ASSERT_TRUE(pkt);
    EXPECT_EQ(ldns_pkt_id(pkt.get()), 77);
    EXPECT_TRUE(ldns_pkt_qr(pkt.get()));
    EXPECT_TRUE(ldns_pkt_ra(pkt.get()));
    EXPECT_TRUE(ldns_pkt_rd(pkt.get()));
    EXPECT_FALSE(ldns_pkt_aa(pkt.get()));
    EXPECT_FALSE(ldns_pkt_tc(pkt.get()));
    EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NOERROR);
    ASSERT_EQ(ldns_pkt_qdcount(pkt.get()), 1);
    const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(pkt.get()), 0);
    EXPECT_EQ(owner_text(question), "Api.GitHub.com.");  // echoed as sent (0x20)
    EXPECT_EQ(ldns_rr_get_type(question), LDNS_RR_TYPE_A);
    ASSERT_EQ(ldns_pkt_ancount(pkt.get()), 2);
    const ldns_rr* first = ldns_rr_list_rr(ldns_pkt_answer(pkt.get()), 0);
    const ldns_rr* second = ldns_rr_list_rr(ldns_pkt_answer(pkt.get()), 1);
    EXPECT_EQ(ldns_rr_get_type(first), LDNS_RR_TYPE_A);
    EXPECT_EQ(ldns_rr_get_class(first), LDNS_RR_CLASS_IN);
    EXPECT_EQ(ldns_rr_ttl(first), 30U);
    EXPECT_EQ(rdata_text(first), "203.0.113.7");
    EXPECT_EQ(rdata_text(second), "203.0.113.8");
    EXPECT_EQ(ldns_pkt_arcount(pkt.get()), 0);
    EXPECT_FALSE(ldns_pkt_edns(pkt.get()));
}

TEST(DnsMessage, AnswersAaaa) {
    const auto query = parse_query(build_query("api.github.com", LDNS_RR_TYPE_AAAA, {.rd = false}));
    ASSERT_TRUE(query);
    const auto pkt = parse_response(answer(*query, {ip("203.0.113.7"), ip("2001:db8::7")}, 5));
    ASSERT_TRUE(pkt);
    EXPECT_FALSE(ldns_pkt_rd(pkt.get()));
    ASSERT_EQ(ldns_pkt_ancount(pkt.get()), 1);
    const ldns_rr* record = ldns_rr_list_rr(ldns_pkt_answer(pkt.get()), 0);
    EXPECT_EQ(ldns_rr_get_type(record), LDNS_RR_TYPE_AAAA);
    EXPECT_EQ(ldns_rr_ttl(record), 5U);
    EXPECT_EQ(rdata_text(record), "2001:db8::7");
}

TEST(DnsMessage, NodataNxdomainAndOtherTypes) {
    const auto aaaa = parse_query(build_query("v4only.example", LDNS_RR_TYPE_AAAA));
    ASSERT_TRUE(aaaa);
    auto pkt = parse_response(answer(*aaaa, {ip("203.0.113.7")}, 30));
    EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NOERROR);
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);

    pkt = parse_response(answer(*aaaa, {}, 30));
    EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NXDOMAIN);
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);

    for (const auto type : {LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_MX, LDNS_RR_TYPE_ANY}) {
        const auto other = parse_query(build_query("api.github.com", type));
        ASSERT_TRUE(other);
        pkt = parse_response(answer(*other, {ip("203.0.113.7")}, 30));
        EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NOERROR);
        EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);
        pkt = parse_response(answer(*other, {}, 30));
        EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NOERROR) << "never NXDOMAIN for types not looked up";
    }
}

TEST(DnsMessage, RefusedAndServfail) {
    const auto query = parse_query(build_query("evil.example", LDNS_RR_TYPE_TXT, {.id = 9}));
    ASSERT_TRUE(query);
    for (const auto& [bytes, rcode] :
         {std::pair{refused(*query), LDNS_RCODE_REFUSED}, std::pair{server_failure(*query), LDNS_RCODE_SERVFAIL}}) {
        const auto pkt = parse_response(bytes);
        ASSERT_TRUE(pkt);
        EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), rcode);
        EXPECT_EQ(ldns_pkt_id(pkt.get()), 9);
        EXPECT_TRUE(ldns_pkt_qr(pkt.get()));
        EXPECT_EQ(ldns_pkt_qdcount(pkt.get()), 1);
        EXPECT_EQ(ldns_pkt_ancount(pkt.get()) + ldns_pkt_nscount(pkt.get()) + ldns_pkt_arcount(pkt.get()), 0);
        // A response is never taken for a query.
        EXPECT_FALSE(parse_query(bytes));
    }
}

TEST(DnsMessage, EchoesOptWithoutOptions) {
    Bytes packet = hand_query();
    packet[11] = 1;
    const Bytes opt{0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x80, 0x00,  // size 1232, DO set
                    0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08, 1,    2,    3,    4, 5, 6, 7, 8};
    packet.insert(packet.end(), opt.begin(), opt.end());
    const auto query = parse_query(packet);
    ASSERT_TRUE(query);
    const auto pkt = parse_response(refused(*query));
    ASSERT_TRUE(pkt);
    EXPECT_TRUE(ldns_pkt_edns(pkt.get()));
    EXPECT_EQ(ldns_pkt_edns_udp_size(pkt.get()), kAdvertisedUdpSize);
    EXPECT_FALSE(ldns_pkt_edns_do(pkt.get()));
    EXPECT_EQ(ldns_pkt_edns_data(pkt.get()), nullptr);
}

std::vector<IpAddress> many_v4(int count) {
    std::vector<IpAddress> out;
    for (int i = 1; i <= count; ++i) out.push_back(ip(("198.51.100." + std::to_string(i)).c_str()));
    return out;
}

TEST(DnsMessage, TruncatesForUdp) {
    const auto plain = parse_query(build_query("big.example", LDNS_RR_TYPE_A, {.id = 3}));
    ASSERT_TRUE(plain);
    const auto full = answer(*plain, many_v4(40), 30);
    ASSERT_GT(full.size(), 512U);
    EXPECT_EQ(parse_response(full) ? ldns_pkt_ancount(parse_response(full).get()) : 0, kMaxAnswerRecords);

    const auto cut = for_udp(*plain, full);
    EXPECT_LE(cut.size(), 512U);
    const auto pkt = parse_response(cut);
    ASSERT_TRUE(pkt);
    EXPECT_TRUE(ldns_pkt_tc(pkt.get()));
    EXPECT_EQ(ldns_pkt_id(pkt.get()), 3);
    EXPECT_EQ(ldns_pkt_get_rcode(pkt.get()), LDNS_RCODE_NOERROR);
    EXPECT_EQ(ldns_pkt_qdcount(pkt.get()), 1);
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);

    // With EDNS the same answer fits.
    const auto edns = parse_query(build_query("big.example", LDNS_RR_TYPE_A, {.edns_size = 1232}));
    ASSERT_TRUE(edns);
    const auto large = answer(*edns, many_v4(40), 30);
    EXPECT_EQ(for_udp(*edns, large), large);
    // A small answer is left alone.
    const auto small = answer(*plain, many_v4(2), 30);
    EXPECT_EQ(for_udp(*plain, small), small);
}

TEST(DnsMessage, NameAllowed) {
    const std::vector<std::string> patterns{"api.github.com", "*.githubusercontent.com", "Registry.NPMJS.org."};
    EXPECT_TRUE(name_allowed("api.github.com", patterns));
    EXPECT_TRUE(name_allowed("API.GitHub.COM.", patterns));
    EXPECT_FALSE(name_allowed("github.com", patterns));
    EXPECT_FALSE(name_allowed("x.api.github.com", patterns)) << "exact means exact";
    EXPECT_TRUE(name_allowed("raw.githubusercontent.com", patterns));
    EXPECT_TRUE(name_allowed("a.b.c.RAW.githubusercontent.com", patterns)) << "any depth";
    EXPECT_FALSE(name_allowed("githubusercontent.com", patterns)) << "strictly below";
    EXPECT_FALSE(name_allowed("evilgithubusercontent.com", patterns));
    EXPECT_TRUE(name_allowed("registry.npmjs.org", patterns));
    EXPECT_FALSE(name_allowed("", patterns));

    const std::vector<std::string> github{"*.github.com", "github.com"};
    EXPECT_FALSE(name_allowed("evilgithub.com", github));
    EXPECT_FALSE(name_allowed("github.com.evil.example", github));
    EXPECT_FALSE(name_allowed("evilgithub.com", {"*.github.com"}));
    EXPECT_FALSE(name_allowed("evilgithub.com", {"github.com"}));
    EXPECT_TRUE(name_allowed("github.com", github));
    EXPECT_TRUE(name_allowed("a.github.com", github));

    // Degenerate patterns match nothing rather than everything.
    EXPECT_FALSE(name_allowed("anything.example", {"*", "*.", "", "."}));
    EXPECT_FALSE(name_allowed("anything.example", {}));
}

}  // namespace
}  // namespace tameflare::dns
