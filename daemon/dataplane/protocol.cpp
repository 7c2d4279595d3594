#include "daemon/dataplane/protocol.h"

#include <algorithm>
#include <limits>

namespace tameflare::dataplane {
namespace {

using Clock = std::chrono::system_clock;

void write_time(Writer& out, Clock::time_point time) {
    out.i64(std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count());
}

// Times and durations travel in microseconds; the clocks count finer, so a
// value past this would overflow when converted (a peer's number, not ours).
constexpr std::int64_t kMaxMicroseconds = std::numeric_limits<std::int64_t>::max() / 1000;
// A held request waits at most this long (far beyond any configured timeout).
constexpr std::int64_t kMaxTimeoutSeconds = std::int64_t{365} * 24 * 3600;

std::int64_t read_bounded(Reader& in, std::int64_t low, std::int64_t high, const char* what) {
    const auto at = in.offset();
    const auto value = in.i64();
    if (value < low || value > high) throw ipc::DecodeError(std::string(what) + " out of range", at);
    return value;
}

Clock::time_point read_time(Reader& in) {
    return Clock::time_point(
        std::chrono::microseconds(read_bounded(in, -kMaxMicroseconds, kMaxMicroseconds, "a time")));
}

std::chrono::microseconds read_duration(Reader& in) {
    return std::chrono::microseconds(read_bounded(in, 0, kMaxMicroseconds, "a duration"));
}

void write_documents(Writer& out, const std::vector<policy::Document>& documents) {
    out.count(documents.size());
    for (const auto& document : documents) {
        out.text(document.origin);
        out.text(document.text);
    }
}

std::vector<policy::Document> read_documents(Reader& in) {
    std::vector<policy::Document> out(in.count(kMaxList, 8));
    for (auto& document : out) {
        document.origin = in.text(kMaxText);
        document.text = in.text(kMaxPolicyBytes);
    }
    return out;
}

policy::Enforcement read_enforcement(Reader& in) {
    const auto at = in.offset();
    const auto level = in.u8();
    if (level > static_cast<std::uint8_t>(policy::Enforcement::full)) {
        throw ipc::DecodeError("an enforcement level " + std::to_string(level) + " that does not exist", at);
    }
    return static_cast<policy::Enforcement>(level);
}

}  // namespace

// ---------------------------------------------------------------------------
// Pieces

void write(Writer& out, const Endpoint& endpoint) {
    out.boolean(endpoint.address.v4);
    for (const auto byte : endpoint.address.bytes) out.u8(byte);
    out.u16(endpoint.port);
}

Endpoint read_endpoint(Reader& in) {
    Endpoint out;
    out.address.v4 = in.boolean();
    for (auto& byte : out.address.bytes) byte = in.u8();
    out.port = in.u16();
    return out;
}

void write(Writer& out, const proxy::TrafficRecord& record) {
    write_time(out, record.time);
    for (const auto* text : {&record.request_id, &record.gateway, &record.agent, &record.connector, &record.action,
                             &record.method, &record.host, &record.path, &record.decision, &record.reason}) {
        out.text(*text);
    }
    out.u32(record.status);
    out.u64(record.request_bytes);
    out.u64(record.response_bytes);
    out.i64(record.latency.count());
    out.i64(record.overhead.count());
    out.boolean(record.forwarded);
}

proxy::TrafficRecord read_record(Reader& in) {
    proxy::TrafficRecord out;
    out.time = read_time(in);
    for (auto* text : {&out.request_id, &out.gateway, &out.agent, &out.connector, &out.action, &out.method, &out.host,
                       &out.path, &out.decision, &out.reason}) {
        *text = in.text(kMaxText);
    }
    out.status = in.u32();
    out.request_bytes = in.u64();
    out.response_bytes = in.u64();
    out.latency = read_duration(in);
    out.overhead = read_duration(in);
    out.forwarded = in.boolean();
    return out;
}

void write(Writer& out, const proxy::ApprovalRequest& request) {
    for (const auto* text : {&request.id, &request.gateway, &request.agent, &request.connector, &request.action,
                             &request.risk, &request.parameters, &request.reason}) {
        out.text(*text);
    }
    write_time(out, request.requested_at);
    out.i64(request.timeout.count());
}

proxy::ApprovalRequest read_approval(Reader& in) {
    proxy::ApprovalRequest out;
    for (auto* text :
         {&out.id, &out.gateway, &out.agent, &out.connector, &out.action, &out.risk, &out.parameters, &out.reason}) {
        *text = in.text(kMaxText);
    }
    out.requested_at = read_time(in);
    out.timeout = std::chrono::seconds(read_bounded(in, 0, kMaxTimeoutSeconds, "an approval timeout"));
    return out;
}

void write_strings(Writer& out, const std::vector<std::string>& values) {
    out.count(values.size());
    for (const auto& value : values) out.text(value);
}

std::vector<std::string> read_strings(Reader& in) {
    std::vector<std::string> out(in.count(kMaxList, 4));
    for (auto& value : out) value = in.text(kMaxText);
    return out;
}

// ---------------------------------------------------------------------------
// The policy

bool PolicyDocuments::operator==(const PolicyDocuments& other) const {
    const auto same = [](const std::vector<policy::Document>& a, const std::vector<policy::Document>& b) {
        return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                          [](const auto& x, const auto& y) { return x.origin == y.origin && x.text == y.text; });
    };
    return same(connectors, other.connectors) && same(gateways, other.gateways) && overrides == other.overrides;
}

std::string encode(const PolicyDocuments& documents) {
    Writer out;
    write_documents(out, documents.connectors);
    write_documents(out, documents.gateways);
    out.count(documents.overrides.size());
    for (const auto& [gateway, level] : documents.overrides) {
        out.text(gateway);
        out.u8(static_cast<std::uint8_t>(level));
    }
    return out.take();
}

PolicyDocuments decode_policy(std::string_view blob) {
    Reader in(blob);
    PolicyDocuments out;
    out.connectors = read_documents(in);
    out.gateways = read_documents(in);
    out.overrides.resize(in.count(kMaxList, 5));
    for (auto& [gateway, level] : out.overrides) {
        gateway = in.text(kMaxText);
        level = read_enforcement(in);
    }
    in.finish();
    return out;
}

void PolicyPart::write(Writer& out) const {
    out.u32(generation);
    out.u32(index);
    out.u32(count);
    out.text(bytes);
}

PolicyPart PolicyPart::read(Reader& in) {
    PolicyPart out;
    out.generation = in.u32();
    out.index = in.u32();
    out.count = in.u32();
    out.bytes = in.text(kPolicyPartBytes);
    return out;
}

std::vector<PolicyPart> split_policy(std::uint32_t generation, const std::string& blob) {
    const auto count =
        static_cast<std::uint32_t>(std::max<std::size_t>(1, (blob.size() + kPolicyPartBytes - 1) / kPolicyPartBytes));
    std::vector<PolicyPart> out;
    out.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        out.push_back({generation, i, count, blob.substr(std::size_t{i} * kPolicyPartBytes, kPolicyPartBytes)});
    }
    return out;
}

std::optional<std::string> PolicyAssembly::add(const PolicyPart& part) {
    if (part.index == 0) {
        generation_ = part.generation;
        next_ = 0;
        blob_.clear();
    }
    if (part.count == 0 || part.index >= part.count || part.generation != generation_ || part.index != next_) {
        next_ = 0;
        blob_.clear();
        throw ipc::DecodeError("policy part " + std::to_string(part.index) + " of " + std::to_string(part.count) +
                                   " (generation " + std::to_string(part.generation) + ") out of order",
                               0);
    }
    if (blob_.size() + part.bytes.size() > kMaxPolicyBytes) {
        throw ipc::DecodeError("a policy larger than " + std::to_string(kMaxPolicyBytes) + " bytes", 0);
    }
    blob_ += part.bytes;
    ++next_;
    if (next_ < part.count) return std::nullopt;
    next_ = 0;
    return std::exchange(blob_, {});
}

// ---------------------------------------------------------------------------
// Messages

void KillSwitch::write(Writer& out) const {
    out.boolean(all);
    write_strings(out, gateways);
    write_strings(out, connectors);
}

KillSwitch KillSwitch::read(Reader& in) {
    KillSwitch out;
    out.all = in.boolean();
    out.gateways = read_strings(in);
    out.connectors = read_strings(in);
    return out;
}

void RegisterAgent::write(Writer& out) const {
    out.u64(tag);
    out.text(gateway);
    out.text(agent);
    out.boolean(listener);
    out.boolean(dns_udp);
    out.boolean(dns_tcp);
}

RegisterAgent RegisterAgent::read(Reader& in) {
    RegisterAgent out;
    out.tag = in.u64();
    out.gateway = in.text(kMaxText);
    out.agent = in.text(kMaxText);
    out.listener = in.boolean();
    out.dns_udp = in.boolean();
    out.dns_tcp = in.boolean();
    return out;
}

Start Start::from(const proxy::ProxyOptions& options) {
    Start out;
    out.threads = options.threads;
    out.max_body_bytes = options.max_body_bytes;
    for (const auto& cidr : options.allowed_upstreams)
        out.allowed_upstreams.push_back(cidr.network.to_string() + "/" + std::to_string(cidr.prefix));
    for (const auto& [name, addresses] : options.hosts) {
        auto& entry = out.hosts.emplace_back(name, std::vector<std::string>{});
        for (const auto& address : addresses) entry.second.push_back(address.to_string());
    }
    out.system_resolver = options.system_resolver;
    out.client_idle_seconds = static_cast<std::uint32_t>(options.client_idle_timeout.count());
    out.upstream_seconds = static_cast<std::uint32_t>(options.upstream_timeout.count());
    out.server_first_wait_ms = static_cast<std::uint32_t>(options.server_first_wait.count());
    return out;
}

proxy::ProxyOptions Start::options() const {
    proxy::ProxyOptions out;
    out.threads = threads;
    out.max_body_bytes = max_body_bytes;
    for (const auto& text : allowed_upstreams) {
        const auto cidr = Cidr::parse(text);
        if (!cidr) throw ipc::DecodeError("an allowed upstream that is not a CIDR: " + text, 0);
        out.allowed_upstreams.push_back(*cidr);
    }
    for (const auto& [name, addresses] : hosts) {
        auto& entry = out.hosts[name];
        for (const auto& text : addresses) {
            const auto address = IpAddress::parse(text);
            if (!address) throw ipc::DecodeError("a host address that is not an address: " + text, 0);
            entry.push_back(*address);
        }
    }
    out.system_resolver = system_resolver;
    out.client_idle_timeout = std::chrono::seconds(client_idle_seconds);
    out.upstream_timeout = std::chrono::seconds(upstream_seconds);
    out.server_first_wait = std::chrono::milliseconds(server_first_wait_ms);
    return out;
}

void Start::write(Writer& out) const {
    out.u32(threads);
    out.u64(max_body_bytes);
    write_strings(out, allowed_upstreams);
    out.count(hosts.size());
    for (const auto& [name, addresses] : hosts) {
        out.text(name);
        write_strings(out, addresses);
    }
    out.boolean(system_resolver);
    out.u32(client_idle_seconds);
    out.u32(upstream_seconds);
    out.u32(server_first_wait_ms);
    out.boolean(transparent);
    out.boolean(explicit_proxy);
    out.boolean(upstream_ca);
    out.boolean(origin_map);
}

Start Start::read(Reader& in) {
    Start out;
    out.threads = in.u32();
    out.max_body_bytes = in.u64();
    out.allowed_upstreams = read_strings(in);
    out.hosts.resize(in.count(kMaxList, 8));
    for (auto& [name, addresses] : out.hosts) {
        name = in.text(kMaxText);
        addresses = read_strings(in);
    }
    out.system_resolver = in.boolean();
    out.client_idle_seconds = in.u32();
    out.upstream_seconds = in.u32();
    out.server_first_wait_ms = in.u32();
    out.transparent = in.boolean();
    out.explicit_proxy = in.boolean();
    out.upstream_ca = in.boolean();
    out.origin_map = in.boolean();
    return out;
}

void OriginAnswer::write(Writer& out) const {
    out.boolean(found);
    dataplane::write(out, destination);
    out.u64(agent);
}

OriginAnswer OriginAnswer::read(Reader& in) {
    OriginAnswer out;
    out.found = in.boolean();
    out.destination = read_endpoint(in);
    out.agent = in.u64();
    return out;
}

void OriginRequest::write(Writer& out) const {
    out.u64(netns_cookie);
    dataplane::write(out, client);
}

OriginRequest OriginRequest::read(Reader& in) {
    OriginRequest out;
    out.netns_cookie = in.u64();
    out.client = read_endpoint(in);
    return out;
}

void Answer::write(Writer& out) const {
    out.text(id);
    out.boolean(answer.approved);
    out.text(answer.note);
    out.text(answer.actor);
}

Answer Answer::read(Reader& in) {
    Answer out;
    out.id = in.text(kMaxText);
    out.answer.approved = in.boolean();
    out.answer.note = in.text(kMaxText);
    out.answer.actor = in.text(kMaxText);
    return out;
}

void Credential::write(Writer& out) const {
    out.boolean(found);
    out.text(value);
}

Credential Credential::read(Reader& in) {
    Credential out;
    out.found = in.boolean();
    out.value = in.text(kMaxText);
    return out;
}

void Leaf::write(Writer& out) const {
    out.text(certificate);
    out.text(error);
}

Leaf Leaf::read(Reader& in) {
    Leaf out;
    out.certificate = in.text(kMaxText);
    out.error = in.text(kMaxText);
    return out;
}

void Records::write(Writer& out) const {
    out.count(records.size());
    for (const auto& record : records) dataplane::write(out, record);
}

Records Records::read(Reader& in) {
    Records out;
    // A record is at least its fixed fields: 8 + 10 * 4 + 4 + 8 * 4 + 1 bytes.
    out.records.resize(in.count(kMaxList, 85));
    for (auto& record : out.records) record = read_record(in);
    return out;
}

void SignLeaf::write(Writer& out) const {
    out.text(server_name);
    out.text(public_key);
}

SignLeaf SignLeaf::read(Reader& in) {
    SignLeaf out;
    out.server_name = in.text(kMaxText);
    out.public_key = in.text(kMaxText);
    return out;
}

void Counters::write(Writer& out) const {
    out.u64(connections_open);
    out.u64(connections_total);
    out.u64(requests);
    out.u64(held);
}

Counters Counters::read(Reader& in) {
    Counters out;
    out.connections_open = in.u64();
    out.connections_total = in.u64();
    out.requests = in.u64();
    out.held = in.u64();
    return out;
}

}  // namespace tameflare::dataplane
