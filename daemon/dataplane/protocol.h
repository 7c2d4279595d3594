// What the supervisor and the data plane say to each other (issue 24), on the
// channel of daemon/ipc: each message a struct with its encoding, by
// direction. docs/architecture.md ("Privilege separation") has the table.
//
//   supervisor -> data plane   Start (+ the listeners and the origins map),
//                              PolicyPart (the policy documents, in parts),
//                              KillSwitch, RegisterAgent (+ its sockets),
//                              UnregisterAgent, Committed, Answer, Credential,
//                              Leaf, OriginAnswer, StopAccepting, CountersRequest
//   data plane -> supervisor   Records (batched), Commit, Submit, Withdraw,
//                              CredentialRequest, SignLeaf, Counters,
//                              OriginRequest
//
// A request carries the frame's sequence number and its reply the same one.
// Every length is bounded (kMaxText, kMaxList) and every field checked when
// read: the supervisor reads what a data plane an agent may have taken over
// wrote (tests/fuzz/ipc_fuzz.cpp).
#pragma once

#include "daemon/ipc/codec.h"
#include "daemon/ipc/messages.h"
#include "daemon/proxy/interfaces.h"
#include "daemon/proxy/options.h"
#include "policy/document.h"
#include "policy/gateway.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::dataplane {

using ipc::Reader;
using ipc::Writer;

inline constexpr std::size_t kMaxText = std::size_t{64} * 1024;  // one string of a message
inline constexpr std::size_t kMaxList = 4096;                    // items of one list
// A policy part's bytes: a frame's worth, with room for its header.
inline constexpr std::size_t kPolicyPartBytes = std::size_t{96} * 1024;
// The whole policy the parts make: far more than any configuration.
inline constexpr std::size_t kMaxPolicyBytes = std::size_t{64} << 20;

enum class Type : std::uint16_t {
    policy_part = 16,
    kill_switch = 17,
    start = 18,
    origin_answer = 19,
    register_agent = 20,
    unregister_agent = 21,
    committed = 22,
    answer = 23,
    credential = 24,
    leaf = 25,
    stop_accepting = 26,
    counters_request = 27,
    records = 40,
    commit = 41,
    submit = 42,
    withdraw = 43,
    credential_request = 44,
    sign_leaf = 45,
    counters = 46,
    origin_request = 47,
};

// ---------------------------------------------------------------------------
// The pieces messages are made of

void write(Writer& out, const Endpoint& endpoint);
Endpoint read_endpoint(Reader& in);
void write(Writer& out, const proxy::TrafficRecord& record);
proxy::TrafficRecord read_record(Reader& in);
void write(Writer& out, const proxy::ApprovalRequest& request);
proxy::ApprovalRequest read_approval(Reader& in);
void write_strings(Writer& out, const std::vector<std::string>& values);
std::vector<std::string> read_strings(Reader& in);

// ---------------------------------------------------------------------------
// The policy: every document and the enforcement levels set at run time,
// one blob sent as PolicyParts and loaded whole (policy::load_config).

struct PolicyDocuments {
    std::vector<policy::Document> connectors;
    std::vector<policy::Document> gateways;
    std::vector<std::pair<std::string, policy::Enforcement>> overrides;
    bool operator==(const PolicyDocuments&) const;
};

std::string encode(const PolicyDocuments& documents);
PolicyDocuments decode_policy(std::string_view blob);

struct PolicyPart {
    static constexpr Type kType = Type::policy_part;
    std::uint32_t generation = 0;  // one per policy sent
    std::uint32_t index = 0;
    std::uint32_t count = 0;
    std::string bytes;

    void write(Writer& out) const;
    static PolicyPart read(Reader& in);
};

// The blob in parts of kPolicyPartBytes.
std::vector<PolicyPart> split_policy(std::uint32_t generation, const std::string& blob);

// Puts a policy's parts back together, in order; refuses a part out of
// order, of another generation, or past kMaxPolicyBytes.
class PolicyAssembly {
public:
    // The whole blob once its last part came.
    std::optional<std::string> add(const PolicyPart& part);

private:
    std::uint32_t generation_ = 0;
    std::uint32_t next_ = 0;
    std::string blob_;
};

// ---------------------------------------------------------------------------
// supervisor -> data plane

struct KillSwitch {
    static constexpr Type kType = Type::kill_switch;
    bool all = false;
    std::vector<std::string> gateways;
    std::vector<std::string> connectors;

    void write(Writer& out) const;
    static KillSwitch read(Reader& in);
};

// What the data plane serves with (proxy::ProxyOptions as data: the
// addresses as text, read back by options()). The descriptors come with it,
// in this order, where their flag is set: the transparent listener, the
// explicit listener, the upstream CA file (opened by the supervisor: the data
// plane may not open it), a read-only descriptor of the BPF origins map.
struct Start {
    static constexpr Type kType = Type::start;
    std::uint32_t threads = 0;
    std::uint64_t max_body_bytes = 0;
    std::vector<std::string> allowed_upstreams;                           // CIDRs
    std::vector<std::pair<std::string, std::vector<std::string>>> hosts;  // name, addresses
    bool system_resolver = true;
    std::uint32_t client_idle_seconds = 0;
    std::uint32_t upstream_seconds = 0;
    std::uint32_t server_first_wait_ms = 0;
    bool transparent = false;
    bool explicit_proxy = false;
    bool upstream_ca = false;
    bool origin_map = false;

    // The options without their listeners and upstream CA file (descriptors, not data).
    static Start from(const proxy::ProxyOptions& options);
    // Throws DecodeError for an address or CIDR that does not parse.
    [[nodiscard]] proxy::ProxyOptions options() const;
    void write(Writer& out) const;
    static Start read(Reader& in);
};

// An agent to serve (proxy::AgentSockets): whose connections its tag marks.
// Its sockets come with it, in this order, where their flag is set: the
// transparent listener, the DNS stub's UDP socket, its TCP listener.
struct RegisterAgent {
    static constexpr Type kType = Type::register_agent;
    std::uint64_t tag = 0;
    std::string gateway;
    std::string agent;
    bool listener = false;
    bool dns_udp = false;
    bool dns_tcp = false;

    void write(Writer& out) const;
    static RegisterAgent read(Reader& in);
};

struct UnregisterAgent {
    static constexpr Type kType = Type::unregister_agent;
    std::uint64_t tag = 0;

    void write(Writer& out) const { out.u64(tag); }
    static UnregisterAgent read(Reader& in) { return {in.u64()}; }
};

// Commit's reply: "" once the record is durable, else why it cannot be.
struct Committed {
    static constexpr Type kType = Type::committed;
    std::string error;

    void write(Writer& out) const { out.text(error); }
    static Committed read(Reader& in) { return {in.text(kMaxText)}; }
};

// A human's answer to a held request (or the broker's own refusal).
struct Answer {
    static constexpr Type kType = Type::answer;
    std::string id;
    proxy::ApprovalAnswer answer;

    void write(Writer& out) const;
    static Answer read(Reader& in);
};

struct Credential {
    static constexpr Type kType = Type::credential;
    bool found = false;
    std::string value;

    void write(Writer& out) const;
    static Credential read(Reader& in);
};

// SignLeaf's reply: the certificate (DER), or why there is none.
struct Leaf {
    static constexpr Type kType = Type::leaf;
    std::string certificate;
    std::string error;

    void write(Writer& out) const;
    static Leaf read(Reader& in);
};

// OriginRequest's reply (kernels where the data plane cannot look the map up).
struct OriginAnswer {
    static constexpr Type kType = Type::origin_answer;
    bool found = false;
    Endpoint destination;
    std::uint64_t agent = 0;

    void write(Writer& out) const;
    static OriginAnswer read(Reader& in);
};

struct StopAccepting {
    static constexpr Type kType = Type::stop_accepting;
    void write(Writer& /*out*/) const {}
    static StopAccepting read(Reader& /*in*/) { return {}; }
};

struct CountersRequest {
    static constexpr Type kType = Type::counters_request;
    void write(Writer& /*out*/) const {}
    static CountersRequest read(Reader& /*in*/) { return {}; }
};

// ---------------------------------------------------------------------------
// data plane -> supervisor

// Records the proxy made, in one frame (bounded by the frame's size).
struct Records {
    static constexpr Type kType = Type::records;
    std::vector<proxy::TrafficRecord> records;

    void write(Writer& out) const;
    static Records read(Reader& in);
};

// A record to make durable before the request is forwarded.
struct Commit {
    static constexpr Type kType = Type::commit;
    proxy::TrafficRecord record;

    void write(Writer& out) const { dataplane::write(out, record); }
    static Commit read(Reader& in) { return {read_record(in)}; }
};

struct Submit {
    static constexpr Type kType = Type::submit;
    proxy::ApprovalRequest request;

    void write(Writer& out) const { dataplane::write(out, request); }
    static Submit read(Reader& in) { return {read_approval(in)}; }
};

struct Withdraw {
    static constexpr Type kType = Type::withdraw;
    std::string id;

    void write(Writer& out) const { out.text(id); }
    static Withdraw read(Reader& in) { return {in.text(kMaxText)}; }
};

struct CredentialRequest {
    static constexpr Type kType = Type::credential_request;
    std::string name;

    void write(Writer& out) const { out.text(name); }
    static CredentialRequest read(Reader& in) { return {in.text(kMaxText)}; }
};

// A leaf certificate for `server_name` over the data plane's own key: the
// CA's key never leaves the supervisor, the leaf's never enters it.
struct SignLeaf {
    static constexpr Type kType = Type::sign_leaf;
    std::string server_name;
    std::string public_key;  // SubjectPublicKeyInfo, DER

    void write(Writer& out) const;
    static SignLeaf read(Reader& in);
};

// proxy::ProxyCounters, field for field.
struct Counters {
    static constexpr Type kType = Type::counters;
    std::uint64_t connections_open = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t requests = 0;
    std::uint64_t held = 0;

    void write(Writer& out) const;
    static Counters read(Reader& in);
};

// What a redirected connection dialed, asked of the supervisor where the
// data plane cannot look the origins map up itself (bpf::OriginMap).
struct OriginRequest {
    static constexpr Type kType = Type::origin_request;
    std::uint64_t netns_cookie = 0;
    Endpoint client;

    void write(Writer& out) const;
    static OriginRequest read(Reader& in);
};

}  // namespace tameflare::dataplane
