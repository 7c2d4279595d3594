#include "daemon/dns/dns_message.h"

#include <ldns/ldns.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

namespace tameflare::dns {
namespace {

struct PktDeleter {
    void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct RrDeleter {
    void operator()(ldns_rr* rr) const { ldns_rr_free(rr); }
};
struct RdfDeleter {
    void operator()(ldns_rdf* rdf) const { ldns_rdf_deep_free(rdf); }
};
// ldns hands out malloc'ed buffers (pkt2wire, rdf2str).
struct FreeDeleter {
    void operator()(void* memory) const { std::free(memory); }  // NOLINT(cppcoreguidelines-no-malloc)
};
using PktPtr = std::unique_ptr<ldns_pkt, PktDeleter>;
using RrPtr = std::unique_ptr<ldns_rr, RrDeleter>;
using RdfPtr = std::unique_ptr<ldns_rdf, RdfDeleter>;

constexpr std::size_t kHeaderSize = 12;
constexpr std::size_t kMaxNameLength = 253;
constexpr std::uint16_t kMaxUdpSize = 4096;
constexpr std::uint16_t kMinUdpSize = 512;

template <typename T>
T* checked(T* pointer) {
    if (pointer == nullptr) throw std::bad_alloc();
    return pointer;
}

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string normalized(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    std::string out(name);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

RdfPtr owner_of(const Query& query) {
    return RdfPtr(checked(ldns_rdf_new_frm_data(LDNS_RDF_TYPE_DNAME, query.wire_name.size(), query.wire_name.data())));
}

void push(ldns_pkt* pkt, ldns_pkt_section section, RrPtr rr) {
    // On success the packet owns the record.
    if (!ldns_pkt_push_rr(pkt, section, rr.get())) throw std::bad_alloc();
    static_cast<void>(rr.release());
}

// Header and question of every response; the rest is up to the caller.
PktPtr response_base(const Query& query, std::uint8_t rcode) {
    PktPtr pkt(checked(ldns_pkt_new()));
    ldns_pkt_set_id(pkt.get(), query.id);
    ldns_pkt_set_qr(pkt.get(), true);
    ldns_pkt_set_opcode(pkt.get(), LDNS_PACKET_QUERY);
    ldns_pkt_set_rd(pkt.get(), query.recursion_desired);
    ldns_pkt_set_ra(pkt.get(), true);
    ldns_pkt_set_rcode(pkt.get(), rcode);

    RrPtr question(checked(ldns_rr_new()));
    ldns_rr_set_owner(question.get(), owner_of(query).release());
    ldns_rr_set_question(question.get(), true);
    ldns_rr_set_type(question.get(), static_cast<ldns_rr_type>(query.question.type));
    ldns_rr_set_class(question.get(), static_cast<ldns_rr_class>(query.question.klass));
    push(pkt.get(), LDNS_SECTION_QUESTION, std::move(question));

    // RFC 6891: answer OPT with OPT. Options (cookies, padding ...) are not
    // echoed and DO is not set: this stub signs nothing.
    if (query.has_edns) ldns_pkt_set_edns_udp_size(pkt.get(), kAdvertisedUdpSize);
    return pkt;
}

std::vector<std::uint8_t> to_wire(const ldns_pkt* pkt) {
    std::uint8_t* raw = nullptr;
    std::size_t size = 0;
    const ldns_status status = ldns_pkt2wire(&raw, pkt, &size);
    const std::unique_ptr<std::uint8_t, FreeDeleter> owned(raw);
    if (status != LDNS_STATUS_OK || raw == nullptr) throw std::bad_alloc();
    return {raw, raw + size};
}

RrPtr address_record(const Query& query, const proxy::IpAddress& address, std::uint32_t ttl) {
    RrPtr rr(checked(ldns_rr_new()));
    ldns_rr_set_owner(rr.get(), owner_of(query).release());
    ldns_rr_set_type(rr.get(), address.v4 ? LDNS_RR_TYPE_A : LDNS_RR_TYPE_AAAA);
    ldns_rr_set_class(rr.get(), LDNS_RR_CLASS_IN);
    ldns_rr_set_ttl(rr.get(), ttl);
    RdfPtr data(checked(ldns_rdf_new_frm_data(address.v4 ? LDNS_RDF_TYPE_A : LDNS_RDF_TYPE_AAAA, address.v4 ? 4 : 16,
                                              address.bytes.data())));
    if (!ldns_rr_push_rdf(rr.get(), data.get())) throw std::bad_alloc();
    static_cast<void>(data.release());
    return rr;
}

}  // namespace

std::optional<Query> parse_query(std::span<const std::uint8_t> packet) {
    // The header counts first: cheap, and ldns need not parse a packet with
    // thousands of records announced.
    if (packet.size() < kHeaderSize) return std::nullopt;
    if (LDNS_QDCOUNT(packet.data()) != 1 || LDNS_ANCOUNT(packet.data()) != 0 || LDNS_NSCOUNT(packet.data()) != 0 ||
        LDNS_ARCOUNT(packet.data()) > 1) {
        return std::nullopt;
    }
    ldns_pkt* raw = nullptr;
    const ldns_status status = ldns_wire2pkt(&raw, packet.data(), packet.size());
    const PktPtr pkt(raw);
    if (status != LDNS_STATUS_OK || !pkt) return std::nullopt;
    if (ldns_pkt_qr(pkt.get()) || ldns_pkt_get_opcode(pkt.get()) != LDNS_PACKET_QUERY) return std::nullopt;
    // ldns moves OPT (and TSIG) out of the additional section: what is left
    // there is some other record, and a TSIG-signed query is not ours to answer.
    if (ldns_pkt_arcount(pkt.get()) != 0 || ldns_pkt_tsig(pkt.get()) != nullptr) return std::nullopt;
    const ldns_rr_list* questions = ldns_pkt_question(pkt.get());
    if (questions == nullptr || ldns_rr_list_rr_count(questions) != 1) return std::nullopt;
    const ldns_rr* question = ldns_rr_list_rr(questions, 0);
    const ldns_rdf* owner = ldns_rr_owner(question);
    if (owner == nullptr || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME) return std::nullopt;

    Query query;
    query.id = ldns_pkt_id(pkt.get());
    query.recursion_desired = ldns_pkt_rd(pkt.get());
    query.question.type = static_cast<std::uint16_t>(ldns_rr_get_type(question));
    query.question.klass = static_cast<std::uint16_t>(ldns_rr_get_class(question));
    if (query.question.klass != kClassIn && query.question.klass != kClassAny) return std::nullopt;

    const std::unique_ptr<char, FreeDeleter> text(ldns_rdf2str(owner));
    if (!text) return std::nullopt;
    query.question.name = normalized(text.get());
    // Presentation length: an escaped odd byte counts four, so names full of
    // them are dropped a little earlier than plain ones; neither can match.
    if (query.question.name.size() > kMaxNameLength) return std::nullopt;
    const auto* name_bytes = ldns_rdf_data(owner);
    query.wire_name.assign(name_bytes, name_bytes + ldns_rdf_size(owner));

    if (ldns_pkt_edns(pkt.get())) {
        // Only EDNS version 0 exists; anything else is not a query we understand.
        if (ldns_pkt_edns_version(pkt.get()) != 0) return std::nullopt;
        query.has_edns = true;
        query.udp_size = std::clamp(ldns_pkt_edns_udp_size(pkt.get()), kMinUdpSize, kMaxUdpSize);
        if (const ldns_rdf* options = ldns_pkt_edns_data(pkt.get()); options != nullptr) {
            const auto* bytes = ldns_rdf_data(options);
            query.edns.assign(bytes, bytes + ldns_rdf_size(options));
        }
    }
    return query;
}

std::vector<std::uint8_t> refused(const Query& query) {
    return to_wire(response_base(query, kRcodeRefused).get());
}

std::vector<std::uint8_t> server_failure(const Query& query) {
    return to_wire(response_base(query, kRcodeServFail).get());
}

std::vector<std::uint8_t> answer(const Query& query, const std::vector<proxy::IpAddress>& addresses,
                                 std::uint32_t ttl) {
    const auto type = query.question.type;
    const bool address_type = type == kTypeA || type == kTypeAaaa;
    const auto rcode = (address_type && addresses.empty()) ? kRcodeNxDomain : kRcodeNoError;
    PktPtr pkt = response_base(query, static_cast<std::uint8_t>(rcode));
    if (address_type) {
        std::size_t records = 0;
        for (const auto& address : addresses) {
            if (address.v4 != (type == kTypeA)) continue;
            if (records++ == kMaxAnswerRecords) break;
            push(pkt.get(), LDNS_SECTION_ANSWER, address_record(query, address, ttl));
        }
    }
    return to_wire(pkt.get());
}

std::vector<std::uint8_t> for_udp(const Query& query, std::vector<std::uint8_t> response) {
    if (response.size() <= query.udp_size) return response;
    ldns_pkt* raw = nullptr;
    const ldns_status status = ldns_wire2pkt(&raw, response.data(), response.size());
    const PktPtr full(raw);
    if (status != LDNS_STATUS_OK || !full) return server_failure(query);
    PktPtr cut = response_base(query, static_cast<std::uint8_t>(ldns_pkt_get_rcode(full.get())));
    ldns_pkt_set_tc(cut.get(), true);
    return to_wire(cut.get());
}

bool name_allowed(std::string_view name, const std::vector<std::string>& patterns) {
    const std::string wanted = normalized(name);
    if (wanted.empty()) return false;
    for (const auto& raw : patterns) {
        const std::string pattern = normalized(raw);
        if (pattern.starts_with("*.")) {
            const std::string_view suffix = std::string_view(pattern).substr(1);  // ".github.com"
            // "*." alone would match every name: treated as matching none.
            if (suffix.size() > 1 && wanted.size() > suffix.size() && wanted.ends_with(suffix)) return true;
        } else if (!pattern.empty() && pattern == wanted) {
            return true;
        }
    }
    return false;
}

}  // namespace tameflare::dns
