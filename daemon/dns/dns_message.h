// DNS packets as the per-agent stub sees them: one standard query in, one
// response out. Every parse and build goes through ldns; nothing here does I/O.
// The stub answers only A/AAAA for allowed names, so the surface is small on
// purpose: anything unusual is dropped (parse_query) or refused.
#pragma once

#include "common/address.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::dns {

inline constexpr std::uint16_t kTypeA = 1;
inline constexpr std::uint16_t kTypeAaaa = 28;
inline constexpr std::uint16_t kClassIn = 1;
inline constexpr std::uint16_t kClassAny = 255;
inline constexpr std::uint16_t kRcodeNoError = 0;
inline constexpr std::uint16_t kRcodeServFail = 2;
inline constexpr std::uint16_t kRcodeNxDomain = 3;
inline constexpr std::uint16_t kRcodeRefused = 5;
// The UDP payload size this stub advertises in its own OPT record (the
// DNS flag day 2020 value: fits any path MTU without fragmentation).
inline constexpr std::uint16_t kAdvertisedUdpSize = 1232;
// At most this many address records in one answer: the stub's answers stay small.
inline constexpr std::size_t kMaxAnswerRecords = 32;

struct Question {
    std::string name;  // lower-case presentation form, no trailing dot ("" for the root); odd bytes are \DDD-escaped
    std::uint16_t type = 0;
    std::uint16_t klass = 0;
};

struct Query {
    std::uint16_t id = 0;
    bool recursion_desired = false;
    Question question;
    std::vector<std::uint8_t> wire_name;  // the question name as sent (case kept: echoed for 0x20 checks)
    bool has_edns = false;                // the query carried an OPT record
    std::vector<std::uint8_t> edns;       // its options (raw rdata); empty unless the query had OPT
    std::uint16_t udp_size = 512;         // largest UDP response the client takes: 512..4096
};

// The query in `packet`, or nullopt for anything that is not exactly one
// well-formed standard query: QR=0, OPCODE=0, QDCOUNT=1, no answer or
// authority records, no additional records other than one OPT, class IN or
// ANY, name <= 253 characters, labels <= 63, no compression loops. Bytes after
// the last record are ignored (they are never echoed nor acted on, and
// tolerating them matches common servers).
std::optional<Query> parse_query(std::span<const std::uint8_t> packet);

// Responses, in wire format: QR=1, RA=1, the query's id, the question echoed
// as sent, RD copied, an OPT record when the query had one. Never truncated:
// use for_udp() before sending over UDP.

// RCODE=REFUSED, no records.
std::vector<std::uint8_t> refused(const Query& query);
// RCODE=SERVFAIL, no records.
std::vector<std::uint8_t> server_failure(const Query& query);
// The answer for an allowed name. `addresses` are all the addresses the name
// has, of both families (the caller resolves the name, not the type):
// - type A: one A record per IPv4 address; type AAAA: one AAAA per IPv6
//   address (at most kMaxAnswerRecords), each with `ttl`;
// - no address of the asked family but some of the other: NOERROR, no records
//   (NODATA), so clients fall back to the other family;
// - `addresses` empty: NXDOMAIN (the name does not exist);
// - any other type (TXT, MX, ANY ...): NOERROR with no records whatever
//   `addresses` holds; the stub never looks those up.
std::vector<std::uint8_t> answer(const Query& query, const std::vector<proxy::IpAddress>& addresses, std::uint32_t ttl);

// `response` as it may go over UDP: unchanged when it fits the query's UDP
// size, otherwise cut to header + question (+ OPT) with TC=1, so the client
// retries over TCP.
std::vector<std::uint8_t> for_udp(const Query& query, std::vector<std::uint8_t> response);

// Whether `name` matches one of `patterns`: an exact name ("api.github.com"),
// or "*.suffix", which matches any name strictly below suffix at any depth
// ("a.b.suffix", not "suffix" itself, not "evilsuffix"). Case-insensitive; a
// trailing dot on either side is ignored.
bool name_allowed(std::string_view name, const std::vector<std::string>& patterns);

}  // namespace tameflare::dns
