// The DNS stub over real UDP and TCP sockets on loopback, with dig and a
// small ldns client on the other end.
#include "daemon/dns/dns_stub.h"

#include "tests/support/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

namespace tameflare::dns {
namespace {

using proxy::IpAddress;
using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

struct PktDeleter {
    void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct FreeDeleter {
    void operator()(void* memory) const { std::free(memory); }  // NOLINT(cppcoreguidelines-no-malloc)
};
using PktPtr = std::unique_ptr<ldns_pkt, PktDeleter>;

IpAddress ip(const char* text) {
    return IpAddress::parse(text).value();
}

Bytes build_query(const std::string& name, ldns_rr_type type, std::uint16_t id = 0x4242, int edns_size = -1) {
    ldns_rdf* owner = ldns_dname_new_frm_str(name.c_str());
    if (owner == nullptr) throw std::runtime_error("bad name " + name);
    const PktPtr pkt(ldns_pkt_query_new(owner, type, LDNS_RR_CLASS_IN, LDNS_RD));  // takes `owner`
    ldns_pkt_set_id(pkt.get(), id);
    if (edns_size >= 0) ldns_pkt_set_edns_udp_size(pkt.get(), static_cast<std::uint16_t>(edns_size));
    std::uint8_t* raw = nullptr;
    std::size_t size = 0;
    const auto status = ldns_pkt2wire(&raw, pkt.get(), &size);
    const std::unique_ptr<std::uint8_t, FreeDeleter> owned(raw);
    if (status != LDNS_STATUS_OK) throw std::runtime_error("pkt2wire failed");
    return {raw, raw + size};
}

PktPtr parse(const std::optional<Bytes>& bytes) {
    if (!bytes) return nullptr;
    ldns_pkt* raw = nullptr;
    const auto status = ldns_wire2pkt(&raw, bytes->data(), bytes->size());
    PktPtr pkt(raw);
    return status == LDNS_STATUS_OK ? std::move(pkt) : nullptr;
}

ldns_pkt_rcode rcode(const PktPtr& pkt) {
    return ldns_pkt_get_rcode(pkt.get());
}

std::vector<std::string> answers(const PktPtr& pkt) {
    std::vector<std::string> out;
    const ldns_rr_list* list = ldns_pkt_answer(pkt.get());
    for (std::size_t i = 0; i < ldns_rr_list_rr_count(list); ++i) {
        const std::unique_ptr<char, FreeDeleter> text(ldns_rdf2str(ldns_rr_rdf(ldns_rr_list_rr(list, i), 0)));
        out.emplace_back(text.get());
    }
    return out;
}

// A socket bound to the loopback address of `family` with a kernel-chosen port.
std::pair<UniqueFd, std::uint16_t> bound_socket(int type, int family = AF_INET) {
    UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (family == AF_INET) {
        auto* address = reinterpret_cast<sockaddr_in*>(&storage);
        address->sin_family = AF_INET;
        address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        length = sizeof(sockaddr_in);
    } else {
        auto* address = reinterpret_cast<sockaddr_in6*>(&storage);
        address->sin6_family = AF_INET6;
        address->sin6_addr = in6addr_loopback;
        length = sizeof(sockaddr_in6);
    }
    auto* address = reinterpret_cast<sockaddr*>(&storage);
    if (!fd || ::bind(fd.get(), address, length) != 0 || (type == SOCK_STREAM && ::listen(fd.get(), 128) != 0) ||
        ::getsockname(fd.get(), address, &length) != 0) {
        throw std::runtime_error("cannot bind a loopback socket");
    }
    const auto port = family == AF_INET ? reinterpret_cast<sockaddr_in*>(&storage)->sin_port
                                        : reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port;
    return {std::move(fd), ntohs(port)};
}

UniqueFd connected(int type, std::uint16_t port, int family = AF_INET) {
    UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (family == AF_INET) {
        auto* address = reinterpret_cast<sockaddr_in*>(&storage);
        address->sin_family = AF_INET;
        address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address->sin_port = htons(port);
        length = sizeof(sockaddr_in);
    } else {
        auto* address = reinterpret_cast<sockaddr_in6*>(&storage);
        address->sin6_family = AF_INET6;
        address->sin6_addr = in6addr_loopback;
        address->sin6_port = htons(port);
        length = sizeof(sockaddr_in6);
    }
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
        throw std::runtime_error("cannot connect to the stub");
    }
    return fd;
}

bool readable(int fd, std::chrono::milliseconds timeout) {
    pollfd ready{fd, POLLIN, 0};
    return ::poll(&ready, 1, static_cast<int>(timeout.count())) == 1;
}

// One datagram out, the reply back (nullopt: none within `timeout`).
std::optional<Bytes> udp_exchange(int fd, const Bytes& packet, std::chrono::milliseconds timeout = 3s) {
    if (::send(fd, packet.data(), packet.size(), 0) != static_cast<ssize_t>(packet.size())) return std::nullopt;
    if (!readable(fd, timeout)) return std::nullopt;
    Bytes reply(65536);
    const auto n = ::recv(fd, reply.data(), reply.size(), 0);
    if (n < 0) return std::nullopt;
    reply.resize(static_cast<std::size_t>(n));
    return reply;
}

std::optional<Bytes> udp_exchange(std::uint16_t port, const Bytes& packet, int family = AF_INET) {
    const auto fd = connected(SOCK_DGRAM, port, family);
    return udp_exchange(fd.get(), packet);
}

bool write_all(int fd, const Bytes& bytes) {
    return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

Bytes framed(const Bytes& message) {
    Bytes out{static_cast<std::uint8_t>(message.size() >> 8U), static_cast<std::uint8_t>(message.size() & 0xffU)};
    out.insert(out.end(), message.begin(), message.end());
    return out;
}

// Reads exactly `size` bytes; false on EOF, error or timeout.
bool read_exact(int fd, std::uint8_t* into, std::size_t size, std::chrono::milliseconds timeout = 3s) {
    std::size_t done = 0;
    while (done < size) {
        if (!readable(fd, timeout)) return false;
        const auto n = ::recv(fd, into + done, size - done, 0);
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

std::optional<Bytes> tcp_read_message(int fd) {
    std::array<std::uint8_t, 2> prefix{};
    if (!read_exact(fd, prefix.data(), 2)) return std::nullopt;
    Bytes message((std::size_t{prefix[0]} << 8U) | prefix[1]);
    if (!read_exact(fd, message.data(), message.size())) return std::nullopt;
    return message;
}

// True when the peer closed (EOF or reset) within `timeout`.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout = 3s) {
    if (!readable(fd, timeout)) return false;
    std::uint8_t byte = 0;
    return ::recv(fd, &byte, 1, 0) <= 0;
}

template <typename Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds timeout = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!predicate()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

// Counts every lookup: the proof that refused names cause none.
class CountingResolver final : public NameResolver {
public:
    explicit CountingResolver(std::map<std::string, std::optional<std::vector<IpAddress>>> names)
        : names_(std::move(names)) {}

    net::awaitable<std::optional<std::vector<IpAddress>>> resolve(std::string name) override {
        ++lookups;
        const std::lock_guard lock(mutex_);
        looked_up_.push_back(name);
        const auto it = names_.find(name);
        if (it == names_.end()) co_return std::vector<IpAddress>{};
        co_return it->second;
    }
    void remember(const std::string& name, const std::vector<IpAddress>& addresses) override {
        const std::lock_guard lock(mutex_);
        remembered_.emplace_back(name, addresses);
    }
    std::vector<std::pair<std::string, std::vector<IpAddress>>> remembered() const {
        const std::lock_guard lock(mutex_);
        return remembered_;
    }

    std::atomic<int> lookups{0};

private:
    std::map<std::string, std::optional<std::vector<IpAddress>>> names_;
    mutable std::mutex mutex_;
    std::vector<std::string> looked_up_;
    std::vector<std::pair<std::string, std::vector<IpAddress>>> remembered_;
};

class DnsStubTest : public ::testing::Test {
protected:
    void SetUp() override {
        runner_ = std::thread([this] { io_.run(); });
    }
    void TearDown() override {
        stub_.reset();
        guard_.reset();
        io_.stop();
        runner_.join();
    }

    // A stub on fresh loopback sockets, started, with the counting resolver.
    void start(std::vector<std::string> allowed, int family = AF_INET) {
        auto [udp_fd, udp] = bound_socket(SOCK_DGRAM, family);
        auto [tcp_fd, tcp] = bound_socket(SOCK_STREAM, family);
        udp_port_ = udp;
        tcp_port_ = tcp;
        stub_ = std::make_unique<DnsStub>(io_, std::move(udp_fd), std::move(tcp_fd), std::move(allowed), resolver_, 30);
        stub_->start();
    }

    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> guard_ = net::make_work_guard(io_);
    std::thread runner_;
    CountingResolver resolver_{{
        {"api.github.com", std::vector<IpAddress>{ip("203.0.113.7"), ip("2001:db8::7")}},
        {"raw.githubusercontent.com", std::vector<IpAddress>{ip("203.0.113.9")}},
        {"broken.github.com", std::nullopt},
        {"registry.test", std::vector<IpAddress>{ip("203.0.113.20")}},
        {"big.github.com",
         [] {
             std::vector<IpAddress> many;
             for (int i = 1; i <= 40; ++i) many.push_back(ip(("198.51.100." + std::to_string(i)).c_str()));
             return many;
         }()},
    }};
    std::unique_ptr<DnsStub> stub_;
    std::uint16_t udp_port_ = 0;
    std::uint16_t tcp_port_ = 0;
    const std::vector<std::string> github_{"api.github.com", "*.githubusercontent.com", "*.github.com"};
};

TEST_F(DnsStubTest, AnswersAnAllowedNameOverUdpAndRemembersIt) {
    start(github_);
    auto pkt = parse(udp_exchange(udp_port_, build_query("api.github.com", LDNS_RR_TYPE_A, 11)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(ldns_pkt_id(pkt.get()), 11);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_NOERROR);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"203.0.113.7"});
    EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(pkt.get()), 0)), 30U);

    pkt = parse(udp_exchange(udp_port_, build_query("API.GITHUB.COM", LDNS_RR_TYPE_AAAA, 12)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"2001:db8::7"});

    EXPECT_EQ(stub_->name_for(ip("203.0.113.7")), "api.github.com");
    EXPECT_EQ(stub_->name_for(ip("2001:db8::7")), "api.github.com");
    EXPECT_EQ(stub_->name_for(ip("203.0.113.9")), std::nullopt) << "never given out";
    const auto remembered = resolver_.remembered();
    ASSERT_EQ(remembered.size(), 2U);
    EXPECT_EQ(remembered[0].first, "api.github.com");
    EXPECT_EQ(remembered[0].second, std::vector<IpAddress>{ip("203.0.113.7")});

    const auto counters = stub_->counters();
    EXPECT_EQ(counters.queries, 2U);
    EXPECT_EQ(counters.answered, 2U);
    EXPECT_EQ(counters.refused + counters.malformed + counters.failed, 0U);
}

TEST_F(DnsStubTest, DigOverUdpAndTcp) {
    start(github_);
    const auto port = std::to_string(udp_port_);
    auto result = testing::run({"/usr/bin/dig", "@127.0.0.1", "-p", port, "api.github.com", "A", "+tries=1", "+time=3",
                                "+noall", "+answer", "+comments"});
    ASSERT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_NE(result.out.find("status: NOERROR"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("203.0.113.7"), std::string::npos) << result.out;

    const auto tcp_port = std::to_string(tcp_port_);
    result = testing::run({"/usr/bin/dig", "@127.0.0.1", "-p", tcp_port, "raw.githubusercontent.com", "A", "+tcp",
                           "+tries=1", "+time=3"});
    ASSERT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_NE(result.out.find("status: NOERROR"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("203.0.113.9"), std::string::npos) << result.out;

    result = testing::run(
        {"/usr/bin/dig", "@127.0.0.1", "-p", port, "secret.attacker.example", "TXT", "+tries=1", "+time=3"});
    ASSERT_EQ(result.status, 0) << result.out << result.err;
    EXPECT_NE(result.out.find("status: REFUSED"), std::string::npos) << result.out;
    EXPECT_EQ(resolver_.lookups, 2);
}

TEST_F(DnsStubTest, RefusesOtherNamesWithoutALookup) {
    start(github_);
    for (const char* name :
         {"evilgithub.com", "github.com", "githubusercontent.com", "example.com", "api.github.com.attacker.example"}) {
        for (const auto type : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_TXT}) {
            const auto pkt = parse(udp_exchange(udp_port_, build_query(name, type)));
            ASSERT_TRUE(pkt) << name;
            EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED) << name;
            EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);
        }
    }
    EXPECT_EQ(resolver_.lookups, 0);
    EXPECT_EQ(stub_->counters().refused, 15U);
}

TEST_F(DnsStubTest, ExfiltrationByNameIsRefusedWithoutLookups) {
    start(github_);
    const auto fd = connected(SOCK_DGRAM, udp_port_);
    std::mt19937 random(42);
    const std::string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
    int refused = 0;
    for (int i = 0; i < 200; ++i) {
        std::string label;
        for (int j = 0; j < 60; ++j) label += alphabet[pick(random)];
        const auto pkt = parse(udp_exchange(
            fd.get(), build_query(label + ".exfil.attacker.example", LDNS_RR_TYPE_A, static_cast<std::uint16_t>(i))));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(ldns_pkt_id(pkt.get()), i);
        if (rcode(pkt) == LDNS_RCODE_REFUSED) ++refused;
    }
    EXPECT_EQ(refused, 200);
    EXPECT_EQ(resolver_.lookups, 0);
    EXPECT_TRUE(resolver_.remembered().empty());
    EXPECT_EQ(stub_->counters().refused, 200U);
    EXPECT_EQ(stub_->counters().answered, 0U);
}

// Collects the stub's reports of unlisted names (called on its strand).
class Reports {
public:
    std::function<void(const UnlistedName&)> observer() {
        return [this](const UnlistedName& name) {
            const std::lock_guard lock(mutex_);
            seen_.push_back(name);
        };
    }
    std::vector<UnlistedName> seen() const {
        const std::lock_guard lock(mutex_);
        return seen_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<UnlistedName> seen_;
};

// A monitor or soft gateway's stub answers names policy does not list, so
// their traffic reaches the proxy and is seen; each name is reported once.
TEST_F(DnsStubTest, AStubThatAnswersUnlistedNamesReportsEachOnce) {
    Reports reports;
    auto [udp_fd, udp] = bound_socket(SOCK_DGRAM, AF_INET);
    udp_port_ = udp;
    stub_ = std::make_unique<DnsStub>(io_, std::move(udp_fd), UniqueFd{}, github_, resolver_, 30);
    stub_->set_answer_unlisted(true);
    stub_->on_unlisted(reports.observer());
    stub_->start();
    for (const auto type : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_A}) {
        const auto pkt = parse(udp_exchange(udp_port_, build_query("registry.test", type)));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(rcode(pkt), LDNS_RCODE_NOERROR);
    }
    const auto pkt = parse(udp_exchange(udp_port_, build_query("api.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"203.0.113.7"});
    EXPECT_EQ(stub_->name_for(ip("203.0.113.20")), "registry.test");  // the proxy can check the destination
    const auto seen = reports.seen();
    ASSERT_EQ(seen.size(), 1U) << "a listed name is not reported, an unlisted one once";
    EXPECT_EQ(seen[0].name, "registry.test");
    EXPECT_EQ(seen[0].type, LDNS_RR_TYPE_A);
    EXPECT_TRUE(seen[0].answered);
    EXPECT_EQ(resolver_.lookups, 4);  // registry.test three times (the stub keeps no cache), api.github.com once

    // Back to refusing (the gateway became full): refused without a lookup, and reported as refused.
    stub_->set_answer_unlisted(false);
    const auto refused = parse(udp_exchange(udp_port_, build_query("other.test", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(refused);
    EXPECT_EQ(rcode(refused), LDNS_RCODE_REFUSED);
    EXPECT_EQ(resolver_.lookups, 4);
    ASSERT_EQ(reports.seen().size(), 2U);
    EXPECT_EQ(reports.seen()[1].name, "other.test");
    EXPECT_FALSE(reports.seen()[1].answered);
}

// Refusals are reported too, but a flood of made-up names gets no more than
// the window's budget of reports.
TEST_F(DnsStubTest, RefusedNamesAreReportedWithinABudget) {
    Reports reports;
    auto [udp_fd, udp] = bound_socket(SOCK_DGRAM, AF_INET);
    udp_port_ = udp;
    stub_ = std::make_unique<DnsStub>(io_, std::move(udp_fd), UniqueFd{}, github_, resolver_, 30);
    stub_->on_unlisted(reports.observer());
    stub_->start();
    const auto fd = connected(SOCK_DGRAM, udp_port_);
    for (int i = 0; i < 150; ++i) {
        const auto pkt = parse(udp_exchange(fd.get(), build_query("n" + std::to_string(i) + ".exfil.attacker.example",
                                                                  LDNS_RR_TYPE_A, static_cast<std::uint16_t>(i))));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED);
    }
    EXPECT_EQ(resolver_.lookups, 0);
    const auto seen = reports.seen();
    EXPECT_EQ(seen.size(), DnsStub::kUnlistedBudget);
    for (const auto& name : seen) EXPECT_FALSE(name.answered);
    EXPECT_EQ(stub_->counters().refused, 150U);
}

TEST_F(DnsStubTest, OtherTypesOfAllowedNamesAreNodataWithoutLookup) {
    start(github_);
    for (const auto type : {LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_MX, LDNS_RR_TYPE_ANY, LDNS_RR_TYPE_CNAME}) {
        const auto pkt = parse(udp_exchange(udp_port_, build_query("api.github.com", type)));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(rcode(pkt), LDNS_RCODE_NOERROR);
        EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);
    }
    EXPECT_EQ(resolver_.lookups, 0);
}

TEST_F(DnsStubTest, ServfailNxdomainAndNodata) {
    start(github_);
    auto pkt = parse(udp_exchange(udp_port_, build_query("broken.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_SERVFAIL);
    pkt = parse(udp_exchange(udp_port_, build_query("missing.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_NXDOMAIN);
    pkt = parse(udp_exchange(udp_port_, build_query("raw.githubusercontent.com", LDNS_RR_TYPE_AAAA)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_NOERROR);
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);
    EXPECT_EQ(stub_->counters().failed, 1U);
    EXPECT_EQ(stub_->counters().answered, 2U);
}

TEST_F(DnsStubTest, MalformedUdpIsDroppedAndCounted) {
    start(github_);
    const auto fd = connected(SOCK_DGRAM, udp_port_);
    auto response = build_query("api.github.com", LDNS_RR_TYPE_A);
    response[2] |= 0x80U;  // QR=1: a reflected response must not be answered
    const std::vector<Bytes> junk{
        Bytes{},
        Bytes{0x01, 0x02, 0x03},
        response,
        Bytes(512, 0xff),
        Bytes{0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00, 0x01, 0x00,
              0x01},
    };
    for (const auto& packet : junk) EXPECT_FALSE(udp_exchange(fd.get(), packet, 200ms)) << "no reply to junk";
    EXPECT_TRUE(eventually([&] { return stub_->counters().malformed == junk.size(); })) << stub_->counters().malformed;
    const auto pkt = parse(udp_exchange(fd.get(), build_query("api.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt) << "still answering";
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_NOERROR);
    EXPECT_EQ(stub_->counters().queries, 1U);
}

TEST_F(DnsStubTest, TruncatesOverUdpAndAnswersInFullOverTcp) {
    start(github_);
    auto pkt = parse(udp_exchange(udp_port_, build_query("big.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_TRUE(ldns_pkt_tc(pkt.get()));
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), 0);

    const auto fd = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(fd.get(), framed(build_query("big.github.com", LDNS_RR_TYPE_A))));
    pkt = parse(tcp_read_message(fd.get()));
    ASSERT_TRUE(pkt);
    EXPECT_FALSE(ldns_pkt_tc(pkt.get()));
    EXPECT_EQ(ldns_pkt_ancount(pkt.get()), dns::kMaxAnswerRecords);
}

TEST_F(DnsStubTest, TcpServesSeveralQueriesOnOneConnection) {
    start(github_);
    const auto fd = connected(SOCK_STREAM, tcp_port_);
    // Both queries in one write: the framing, not the segments, delimits them.
    auto both = framed(build_query("api.github.com", LDNS_RR_TYPE_A, 1));
    const auto second = framed(build_query("evil.example", LDNS_RR_TYPE_A, 2));
    both.insert(both.end(), second.begin(), second.end());
    ASSERT_TRUE(write_all(fd.get(), both));
    auto pkt = parse(tcp_read_message(fd.get()));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(ldns_pkt_id(pkt.get()), 1);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"203.0.113.7"});
    pkt = parse(tcp_read_message(fd.get()));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(ldns_pkt_id(pkt.get()), 2);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED);
    // And a third later on the same connection.
    ASSERT_TRUE(write_all(fd.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_AAAA, 3))));
    pkt = parse(tcp_read_message(fd.get()));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"2001:db8::7"});
}

TEST_F(DnsStubTest, TcpBadFramingClosesTheConnection) {
    start(github_);
    auto zero = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(zero.get(), Bytes{0x00, 0x00}));
    EXPECT_TRUE(closed_by_peer(zero.get())) << "length 0";

    auto oversized = connected(SOCK_STREAM, tcp_port_);
    Bytes big{0x13, 0x88};  // 5000
    big.resize(2 + 5000, 0);
    ASSERT_TRUE(write_all(oversized.get(), big));
    EXPECT_TRUE(closed_by_peer(oversized.get())) << "length 5000";

    auto garbage = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(garbage.get(), framed(Bytes(20, 0xff))));
    EXPECT_TRUE(closed_by_peer(garbage.get())) << "malformed message";

    EXPECT_TRUE(eventually([&] { return stub_->counters().malformed == 3; })) << stub_->counters().malformed;
    EXPECT_EQ(resolver_.lookups, 0);
    // The stub still serves new clients.
    const auto fd = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(fd.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    EXPECT_TRUE(parse(tcp_read_message(fd.get())));
}

TEST_F(DnsStubTest, TcpIdleConnectionIsClosedAfterTenSeconds) {
    start(github_);
    const auto fd = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(fd.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    ASSERT_TRUE(tcp_read_message(fd.get()));
    // Half a length prefix, then silence: a slow client gets no more time than an idle one.
    ASSERT_TRUE(write_all(fd.get(), Bytes{0x00}));
    const auto before = std::chrono::steady_clock::now();
    EXPECT_TRUE(closed_by_peer(fd.get(), DnsStub::kTcpIdleTimeout + 3s));
    const auto waited = std::chrono::steady_clock::now() - before;
    EXPECT_GE(waited, DnsStub::kTcpIdleTimeout - 1s);
    EXPECT_LE(waited, DnsStub::kTcpIdleTimeout + 2s);
}

TEST_F(DnsStubTest, TcpClientsAreCapped) {
    start(github_);
    std::vector<UniqueFd> clients;
    for (std::size_t i = 0; i < DnsStub::kMaxTcpClients; ++i) {
        clients.push_back(connected(SOCK_STREAM, tcp_port_));
        // A round trip, so the stub has surely accepted this one.
        ASSERT_TRUE(write_all(clients.back().get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
        ASSERT_TRUE(tcp_read_message(clients.back().get())) << i;
    }
    const auto extra = connected(SOCK_STREAM, tcp_port_);
    EXPECT_TRUE(closed_by_peer(extra.get())) << "client 65 is turned away";
    // The others still work; once one leaves, a newcomer is served.
    ASSERT_TRUE(write_all(clients.front().get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    EXPECT_TRUE(tcp_read_message(clients.front().get()));
    clients.pop_back();
    std::optional<Bytes> reply;
    EXPECT_TRUE(eventually([&]() -> bool {
        const auto late = connected(SOCK_STREAM, tcp_port_);
        if (!write_all(late.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A)))) return false;
        reply = tcp_read_message(late.get());
        return reply.has_value();
    }));
}

TEST_F(DnsStubTest, SetAllowedTakesEffect) {
    start({"api.github.com"});
    auto pkt = parse(udp_exchange(udp_port_, build_query("raw.githubusercontent.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED);

    stub_->set_allowed({"*.githubusercontent.com"});
    pkt = parse(udp_exchange(udp_port_, build_query("raw.githubusercontent.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"203.0.113.9"});
    pkt = parse(udp_exchange(udp_port_, build_query("api.github.com", LDNS_RR_TYPE_A)));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED) << "no longer listed";
    EXPECT_EQ(resolver_.lookups, 1);
}

TEST_F(DnsStubTest, ServesIpv6Loopback) {
    try {
        start(github_, AF_INET6);
    } catch (const std::exception& error) {
        GTEST_SKIP() << "no ::1 here: " << error.what();
    }
    auto pkt = parse(udp_exchange(udp_port_, build_query("api.github.com", LDNS_RR_TYPE_AAAA), AF_INET6));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"2001:db8::7"});
    const auto fd = connected(SOCK_STREAM, tcp_port_, AF_INET6);
    ASSERT_TRUE(write_all(fd.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    pkt = parse(tcp_read_message(fd.get()));
    ASSERT_TRUE(pkt);
    EXPECT_EQ(answers(pkt), std::vector<std::string>{"203.0.113.7"});
}

TEST_F(DnsStubTest, StopWithClientsConnectedIsPromptAndClean) {
    start(github_);
    std::vector<UniqueFd> clients;
    clients.reserve(5);
    for (int i = 0; i < 5; ++i) clients.push_back(connected(SOCK_STREAM, tcp_port_));
    // One mid-message: a length announced, the message never sent.
    ASSERT_TRUE(write_all(clients[0].get(), Bytes{0x00, 0x20, 0x00}));
    ASSERT_TRUE(write_all(clients[1].get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    ASSERT_TRUE(tcp_read_message(clients[1].get()));

    const auto before = std::chrono::steady_clock::now();
    stub_->stop();
    for (const auto& client : clients) EXPECT_TRUE(closed_by_peer(client.get(), 2s));
    stub_.reset();  // waits for every coroutine
    EXPECT_LT(std::chrono::steady_clock::now() - before, 2s);
    EXPECT_FALSE(udp_exchange(udp_port_, build_query("api.github.com", LDNS_RR_TYPE_A)).has_value());
}

TEST_F(DnsStubTest, DestroyWithoutStopWhileIoRuns) {
    start(github_);
    const auto client = connected(SOCK_STREAM, tcp_port_);
    ASSERT_TRUE(write_all(client.get(), framed(build_query("api.github.com", LDNS_RR_TYPE_A))));
    ASSERT_TRUE(tcp_read_message(client.get()));
    const auto before = std::chrono::steady_clock::now();
    stub_.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - before, 2s);
    EXPECT_TRUE(closed_by_peer(client.get(), 2s));
}

// The daemon's wiring: the real proxy::Resolver with static overrides.
TEST(DnsStubWithProxyResolver, AnswersFromOverridesAndFailsClosed) {
    net::io_context io;
    auto guard = net::make_work_guard(io);
    std::thread runner([&] { io.run(); });
    proxy::Resolver resolver(proxy::Resolver::Options{
        .hosts = {{"api.github.com", {ip("127.0.0.1")}}},
        .use_system = false,
    });
    auto [udp_fd, udp_port] = bound_socket(SOCK_DGRAM);
    auto [tcp_fd, tcp_port] = bound_socket(SOCK_STREAM);
    {
        DnsStub stub(io, std::move(udp_fd), std::move(tcp_fd), {"api.github.com", "*.github.com"}, resolver);
        stub.start();
        auto pkt = parse(udp_exchange(udp_port, build_query("api.github.com", LDNS_RR_TYPE_A)));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(answers(pkt), std::vector<std::string>{"127.0.0.1"});
        EXPECT_EQ(stub.name_for(ip("127.0.0.1")), "api.github.com");
        // Allowed but unknown to a resolver without the system: SERVFAIL, not NXDOMAIN.
        pkt = parse(udp_exchange(udp_port, build_query("unknown.github.com", LDNS_RR_TYPE_A)));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(rcode(pkt), LDNS_RCODE_SERVFAIL);
        const auto fd = connected(SOCK_STREAM, tcp_port);
        ASSERT_TRUE(write_all(fd.get(), framed(build_query("evil.example", LDNS_RR_TYPE_A))));
        pkt = parse(tcp_read_message(fd.get()));
        ASSERT_TRUE(pkt);
        EXPECT_EQ(rcode(pkt), LDNS_RCODE_REFUSED);
    }
    guard.reset();
    io.stop();
    runner.join();
}

}  // namespace
}  // namespace tameflare::dns
