// Arbitrary datagrams into the DNS stub's packet code: parse_query must never
// crash, and what the stub would send back must be a well-formed response to
// exactly the question asked (checked by parsing it again with QR cleared).
#include "daemon/dns/dns_message.h"

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

using namespace tameflare::dns;

// The response as a query again: same id and question, or a crash.
void check_echo(const Query& query, std::vector<std::uint8_t> response) {
    if (response.size() < 12 || (response[2] & 0x80U) == 0) std::abort();
    if (parse_query(response)) std::abort();  // a response is never taken for a query
    response[2] &= 0x7fU;
    const auto again = parse_query(response);
    if (!again || again->id != query.id || again->question.name != query.question.name ||
        again->question.type != query.question.type || again->wire_name != query.wire_name) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto query = parse_query(std::span<const std::uint8_t>(data, size));
    if (!query) return 0;
    if (query->question.name.size() > 253) std::abort();
    for (const char c : query->question.name) {
        if (c >= 'A' && c <= 'Z') std::abort();
    }
    check_echo(*query, refused(*query));
    check_echo(*query, server_failure(*query));

    // Addresses from the input itself, so answers vary in size and family.
    std::vector<tameflare::proxy::IpAddress> addresses;
    for (std::size_t i = 0; i + 16 <= size && addresses.size() < 40; i += 16) {
        tameflare::proxy::IpAddress address;
        std::copy(data + i, data + i + 16, address.bytes.begin());
        address.v4 = (data[i] & 1U) != 0;
        addresses.push_back(address);
    }
    const auto full = answer(*query, addresses, 30);
    if (full.size() < 12 || parse_query(full)) std::abort();
    const auto datagram = for_udp(*query, full);
    if (datagram.size() > query->udp_size) std::abort();
    if (datagram != full) check_echo(*query, datagram);  // truncated: header and question only
    static_cast<void>(name_allowed(query->question.name, {"api.github.com", "*.githubusercontent.com"}));
    return 0;
}
