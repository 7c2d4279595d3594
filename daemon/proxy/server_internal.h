// The proxy server's insides, shared by its three files and by nothing else:
// server.cpp (the listeners and the server's lifetime), session.cpp (one
// client connection: sniffing, interception, tunnels) and http_exchange.cpp
// (one HTTP request after another on a connection, through the stages of
// stage/). Not a public header: include daemon/proxy/server.h.
#pragma once

#include "daemon/proxy/server.h"

#include "common/text.h"

#include "common/log.h"
#include "daemon/proxy/asio.h"
#include "daemon/proxy/credential.h"
#include "daemon/proxy/liveness.h"
#include "daemon/proxy/request_head.h"
#include "daemon/proxy/resolver.h"
#include "daemon/proxy/sniffer.h"
#include "daemon/proxy/stage/destination.h"
#include "daemon/proxy/stage/outcome.h"
#include "daemon/proxy/stage/request_gate.h"
#include "daemon/proxy/stage/upstream_headers.h"
#include "daemon/proxy/tunnel.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <variant>

namespace tameflare::proxy {

namespace detail {

class Session;
using stage::Mode;
using stage::Outcome;
using stage::Refusal;

using Clock = std::chrono::steady_clock;
using boost::system::error_code;
constexpr auto kToken = net::use_awaitable;
// The longest a request waits for its traffic record to be durable before it
// is refused instead of forwarded.
constexpr std::chrono::seconds kCommitWait{10};
// A body is relayed in pieces of at most this size; one of at most
// kSmallBodyBytes needs no larger reads.
constexpr std::size_t kBodyChunkBytes = std::size_t{64} * 1024;
constexpr std::size_t kSmallBodyBytes = std::size_t{16} * 1024;

// The piece a body of `length` bytes (none: unknown, chunked) is relayed in.
inline std::size_t body_piece(const boost::optional<std::uint64_t>& length) {
    return length ? static_cast<std::size_t>(std::min<std::uint64_t>(*length, kBodyChunkBytes)) : kBodyChunkBytes;
}

// Beast reads into a flat_buffer as much as it has room for, at least 512
// bytes, and a buffer that is consumed as fast as it fills never grows: a
// body would be relayed 512 bytes per system call. While a body is relayed
// the buffer gets room for a whole piece; afterwards an empty buffer gives
// the memory back, so an idle connection holds none of it.
class LargeReads {
public:
    // `piece`: what body_piece() chose; a small body needs no more room.
    LargeReads(beast::flat_buffer& buffer, std::size_t piece) : buffer_(piece > kSmallBodyBytes ? &buffer : nullptr) {
        if (buffer_ != nullptr) buffer_->reserve(kBodyChunkBytes);
    }
    ~LargeReads() {
        if (buffer_ != nullptr && buffer_->size() == 0) buffer_->shrink_to_fit();
    }
    LargeReads(const LargeReads&) = delete;
    LargeReads& operator=(const LargeReads&) = delete;

private:
    beast::flat_buffer* buffer_;
};

inline Endpoint to_endpoint(const tcp::endpoint& endpoint) {
    Endpoint out;
    auto address = endpoint.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        address = net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6());
    }
    out.address = IpAddress::parse(address.to_string()).value_or(IpAddress{});
    out.port = endpoint.port();
    return out;
}

inline tcp::endpoint to_asio(const Endpoint& endpoint) {
    return {net::ip::make_address(endpoint.address.to_string()), endpoint.port};
}

// What is known about a client connection before its first request.
struct ConnectionContext {
    Mode mode = Mode::transparent;
    std::string gateway;
    std::string agent;
    Endpoint client;
    std::optional<Endpoint> destination;  // transparent: what the agent dialed
    std::uint64_t listener = 0;           // transparent: the tag of the listener that accepted it
    std::string verified_name;            // the TLS server name or CONNECT host; "" when none
    std::uint16_t port = 0;               // the destination port
    bool tls = false;
};

template <class Stream>
constexpr bool kIsTls = !std::is_same_v<Stream, beast::tcp_stream>;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// The alert a TLS peer sent that ended the handshake ("unknown CA"), or ""
// when it ended otherwise (closed, timed out, malformed).
inline std::string received_alert(const error_code& error) {
    if (error.category() != net::error::get_ssl_category()) return {};
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(error.value()));
    if (reason <= SSL_AD_REASON_OFFSET || reason >= SSL_AD_REASON_OFFSET + 256) return {};
    return SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET);
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The server's shared state.

struct ProxyServer::Impl : std::enable_shared_from_this<ProxyServer::Impl> {
    ProxyOptions options;
    ProxyServices services;
    std::vector<std::unique_ptr<net::io_context>> contexts;
    std::vector<std::thread> threads;
    std::atomic<std::size_t> next_context{0};
    std::optional<tcp::acceptor> transparent;
    std::optional<tcp::acceptor> explicit_proxy;
    // Listeners added at run time, by tag; touched only on the first context.
    std::multimap<std::uint64_t, std::shared_ptr<tcp::acceptor>> added;
    net::ssl::context server_tls{net::ssl::context::tls_server};
    net::ssl::context client_tls{net::ssl::context::tls_client};
    Resolver resolver;
    policy::RateLimiter limiter;
    std::atomic<std::shared_ptr<const policy::KillSwitch>> kill{std::make_shared<const policy::KillSwitch>()};
    std::uint64_t id_prefix = 0;
    std::atomic<std::uint64_t> id_counter{0};
    std::atomic<std::uint64_t> open{0}, total{0}, requests{0}, held{0};
    bool started = false;

    // Store callbacks may come after stop(): they post to an io_context only
    // while it is alive, and stop() waits for those in flight first.
    struct Lifeline {
        std::mutex mutex;
        bool alive = true;
        std::atomic<int> in_flight{0};
    };
    std::shared_ptr<Lifeline> lifeline = std::make_shared<Lifeline>();

    std::mutex sessions_mutex;
    std::list<std::weak_ptr<detail::Session>> sessions;

    // (agent, name) pairs whose refused handshake was logged: once each.
    std::mutex refusals_mutex;
    std::set<std::pair<std::string, std::string>> refusals_logged;
    bool first_refusal(const std::string& agent, const std::string& name) {
        std::lock_guard lock(refusals_mutex);
        if (refusals_logged.size() >= 4096) refusals_logged.clear();  // bounded; a few repeats are harmless
        return refusals_logged.emplace(agent, name).second;
    }

    Impl(ProxyOptions o, ProxyServices s)
        : options(std::move(o)), services(s), resolver(Resolver::Options{options.hosts, options.system_resolver}) {}

    net::io_context& pick_context() { return *contexts[next_context++ % contexts.size()]; }

    std::string new_request_id() {
        char text[40];
        std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(id_prefix),
                      static_cast<unsigned long long>(++id_counter));
        return text;
    }

    void record(TrafficRecord record) {
        if (services.traffic != nullptr) services.traffic->record(std::move(record));
    }

    net::awaitable<void> accept_loop(tcp::acceptor& acceptor, stage::Mode mode, std::uint64_t tag = 0);
    net::awaitable<void> purge_rate_limits();
};

namespace detail {

// The one traffic recorder: the record of one HTTP request or one tunnel, from
// its start to its one end. begin() stamps it (time, a new request id, the
// connection's gateway and agent); the stages fill it and set its outcome and
// reason; durable() is what is committed before anything goes upstream
// (Session::start_commit); end() hands it to the sink, once.
class Recording {
public:
    void begin(ProxyServer::Impl& impl, const ConnectionContext& context) {
        started_ = Clock::now();
        record_ = TrafficRecord{};
        record_.time = std::chrono::system_clock::now();
        record_.request_id = impl.new_request_id();
        record_.gateway = context.gateway;
        record_.agent = context.agent;
        outcome_ = Outcome::denied;
    }
    TrafficRecord& record() { return record_; }
    const TrafficRecord& record() const { return record_; }
    Outcome outcome() const { return outcome_; }
    std::string_view decision() const { return stage::to_string(outcome_); }
    const std::string& reason() const { return record_.reason; }
    void set_reason(std::string reason) { record_.reason = std::move(reason); }
    void set(Outcome outcome, std::string reason) {
        outcome_ = outcome;
        record_.reason = std::move(reason);
    }
    Clock::time_point started() const { return started_; }
    // The record as committed before a forward: decided, forwarded, no status yet.
    TrafficRecord durable() const {
        TrafficRecord copy = record_;
        copy.decision = decision();
        copy.forwarded = true;
        return copy;
    }
    // The end, however it came: its latency, its outcome, to the sink.
    void end(ProxyServer::Impl& impl) {
        record_.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_);
        record_.decision = decision();
        impl.record(std::move(record_));
        record_ = TrafficRecord{};
    }

private:
    TrafficRecord record_;
    Outcome outcome_ = Outcome::denied;
    Clock::time_point started_;
};

// The one way upstream, for HTTP requests and tunnels alike (dialer.cpp):
// where a request may go (the resolver, the agreed destination and the
// address policy), the connect, and the TLS handshake with the upstream's
// certificate verified.
class Dialer {
public:
    explicit Dialer(ProxyServer::Impl& impl) : impl_(impl) {}
    // Where an HTTP request for `host` may go (destination.h); `dialed`: what
    // a redirected agent connected to.
    net::awaitable<std::variant<std::vector<IpAddress>, stage::DestinationRefusal>> agree(
        const std::string& host, const std::optional<Endpoint>& dialed) const;
    // Of a tunnel's addresses, those the address policy lets the proxy reach.
    std::vector<IpAddress> reachable(std::vector<IpAddress> addresses) const;
    // Connects to the first of `addresses` that answers at `port`; the last error when none does.
    net::awaitable<error_code> connect(beast::tcp_stream& stream, const std::vector<IpAddress>& addresses,
                                       std::uint16_t port) const;
    // The TLS handshake with `host` (a name or an address literal), its
    // certificate verified for it: "" or why it failed.
    net::awaitable<std::string> handshake(TlsStream& stream, const std::string& host) const;

private:
    ProxyServer::Impl& impl_;
};

// One client connection. Shared so the kill switch and approval answers can
// reach it from other threads; they post to its executor.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(std::shared_ptr<ProxyServer::Impl> impl, tcp::socket socket, Mode mode)
        : impl_(std::move(impl)), stream_(std::move(socket)), hold_timer_(stream_.get_executor()) {
        context_.mode = mode;
        ++impl_->open;
        ++impl_->total;
    }
    ~Session() {
        --impl_->open;
        if (!enlisted_) return;
        std::lock_guard lock(impl_->sessions_mutex);
        impl_->sessions.erase(self_);
    }

    void set_listener(std::uint64_t tag) { context_.listener = tag; }

    void enlist() {
        std::lock_guard lock(impl_->sessions_mutex);
        self_ = impl_->sessions.insert(impl_->sessions.end(), weak_from_this());
        enlisted_ = true;
    }

    // `self` keeps the session alive for as long as the coroutine runs.
    net::awaitable<void> run(std::shared_ptr<Session> self);

    // The scope the kill switch compares against; set per request.
    void set_scope(std::string gateway, std::string connector, std::string provider) {
        std::lock_guard lock(impl_->sessions_mutex);
        gateway_ = std::move(gateway);
        connector_ = std::move(connector);
        provider_ = std::move(provider);
    }
    bool in_scope(const policy::KillSwitch& kill) const {  // caller holds sessions_mutex
        return !gateway_.empty() && kill.covers(gateway_, connector_, provider_);
    }

    // Kill switch: a held request is denied, anything else is cut at once.
    void sever() {
        killed_ = true;
        if (holding_) {
            answer_ = ApprovalAnswer{false, "kill switch active"};
            hold_timer_.cancel();
            return;
        }
        close_all();
    }
    // Makes `record` durable in the traffic log; await_commit() gives the
    // outcome. The two are split so the write overlaps the upstream connect.
    void start_commit(TrafficRecord record) {
        commit_result_.reset();
        // A confirmation still on its way for an earlier request on this
        // connection (one that failed before waiting) must not count for this one.
        const std::uint64_t sequence = ++commit_sequence_;
        if (impl_->services.traffic == nullptr) {
            commit_result_ = std::string();
            return;
        }
        auto lifeline = impl_->lifeline;
        ++lifeline->in_flight;
        impl_->services.traffic->commit(std::move(record), [weak = weak_from_this(), executor = stream_.get_executor(),
                                                            lifeline, sequence](std::string error) {
            {
                std::lock_guard lock(lifeline->mutex);
                if (lifeline->alive) {
                    net::post(executor, [weak, sequence, error = std::move(error)]() mutable {
                        if (auto session = weak.lock()) session->committed(sequence, std::move(error));
                    });
                }
            }
            --lifeline->in_flight;
        });
    }
    net::awaitable<std::string> await_commit() {
        if (!commit_result_) {
            committing_ = true;
            hold_timer_.expires_after(kCommitWait);
            error_code ignored;
            co_await hold_timer_.async_wait(net::redirect_error(kToken, ignored));
            committing_ = false;
        }
        if (!commit_result_) {
            co_return "the traffic log did not confirm the write within " + std::to_string(kCommitWait.count()) + " s";
        }
        const std::string value = *commit_result_;
        co_return value;
    }
    void committed(std::uint64_t sequence, std::string error) {
        if (sequence != commit_sequence_) return;
        commit_result_ = std::move(error);
        if (committing_) hold_timer_.cancel();
    }

    void deliver(ApprovalAnswer answer) {
        if (!holding_ || answer_) return;
        answer_ = std::move(answer);
        hold_timer_.cancel();
    }
    void close_all() {
        error_code ignored;
        if (client_socket_ != nullptr) {
            client_socket_->shutdown(tcp::socket::shutdown_both, ignored);
            client_socket_->close(ignored);
        }
        if (upstream_socket_ != nullptr) {
            upstream_socket_->shutdown(tcp::socket::shutdown_both, ignored);
            upstream_socket_->close(ignored);
        }
    }

    ProxyServer::Impl& impl() { return *impl_; }
    ConnectionContext& context() { return context_; }
    net::steady_timer& hold_timer() { return hold_timer_; }
    bool& holding() { return holding_; }
    std::optional<ApprovalAnswer>& answer() { return answer_; }
    bool killed() const { return killed_; }
    tcp::socket*& upstream_socket() { return upstream_socket_; }

private:
    // The tcp rule of the connection's gateway that allows its destination,
    // and where a tunnel may go (before the address policy).
    struct TcpMatch {
        std::shared_ptr<const policy::Config> config;  // keeps `rule` alive
        const policy::TcpRule* rule = nullptr;         // null: no rule allows it
        std::vector<IpAddress> addresses;
    };
    enum class TcpKind { raw, tls_passthrough };

    net::awaitable<void> serve_explicit();
    net::awaitable<void> intercept(beast::flat_buffer& buffer);
    net::awaitable<void> raw_tcp(const std::string& name);
    net::awaitable<TcpMatch> match_tcp_rule(const std::string& name, std::shared_ptr<const policy::Config> config);
    net::awaitable<void> tunnel_tcp(const std::string& name, TcpMatch match, TcpKind kind);
    bool raw_rule_may_apply();
    net::awaitable<std::optional<Sniffed>> peek(std::chrono::milliseconds timeout, bool& timed_out);
    void refuse_connection(const std::string& reason, const std::string& host);
    void refuse_connection(Recording& recording, std::string reason);
    [[nodiscard]] std::string tunnel_refusal(const std::string& target, bool ruled, bool tls) const;
    void record_refused_handshake(const error_code& error, bool answered, const std::string& name);

    std::shared_ptr<ProxyServer::Impl> impl_;
    beast::tcp_stream stream_;
    ConnectionContext context_;
    net::steady_timer hold_timer_;
    bool holding_ = false;
    bool killed_ = false;
    std::optional<ApprovalAnswer> answer_;
    tcp::socket* upstream_socket_ = nullptr;
    tcp::socket* client_socket_ = &stream_.socket();  // the TLS stream's, while it owns the socket
    bool enlisted_ = false;
    bool committing_ = false;
    std::uint64_t commit_sequence_ = 0;
    std::optional<std::string> commit_result_;
    std::list<std::weak_ptr<Session>>::iterator self_;
    std::string gateway_, connector_, provider_;  // guarded by impl_->sessions_mutex

    template <class Stream>
    friend class Exchange;
};

// ---------------------------------------------------------------------------
// Reading a request head.

// Reads until a whole head is in `buffer`; nullopt on EOF, timeout or error.
template <class Stream>
net::awaitable<std::optional<HeadResult>> read_head(Stream& stream, beast::flat_buffer& buffer,
                                                    std::chrono::seconds timeout) {
    for (;;) {
        const auto data = buffer.data();
        auto result = parse_request_head({static_cast<const char*>(data.data()), data.size()});
        if (result.status != HeadResult::Status::need_more) co_return result;
        beast::get_lowest_layer(stream).expires_after(timeout);
        error_code error;
        const std::size_t n = co_await stream.async_read_some(buffer.prepare(4096), net::redirect_error(kToken, error));
        if (error) co_return std::nullopt;
        buffer.commit(n);
    }
}

// ---------------------------------------------------------------------------
// One HTTP connection (plain or TLS) and its upstream.

template <class Stream>
class Exchange {
public:
    Exchange(Session& session, Stream& client, beast::flat_buffer& buffer)
        : session_(session), impl_(session.impl()), context_(session.context()), client_(client), buffer_(buffer) {}
    ~Exchange() { session_.upstream_socket() = nullptr; }

    net::awaitable<void> serve() {
        while (co_await one_request()) {
        }
        if (upstream_) {
            error_code ignored;
            beast::get_lowest_layer(*upstream_).socket().close(ignored);
        }
    }

private:
    struct Local {  // a response the proxy writes itself
        http::status status = http::status::forbidden;
        std::string error;  // for non-decision errors: a short code
        std::string hint;
        std::vector<std::pair<std::string, std::string>> headers;
    };
    // The response to a policy refusal (deny, rate limit).
    static Local refusal_for(const policy::Decision& decision) {
        Local local;
        if (decision.verdict == policy::Verdict::rate_limited) {
            local.status = http::status::too_many_requests;
            local.headers.emplace_back("Retry-After", std::to_string(decision.retry_after.count()));
        } else if (decision.kill_switch) {
            local.headers.emplace_back("X-TameFlare-Kill-Switch", "active");
        }
        return local;
    }
    // A stage's refusal: its reason is the request's, the rest the response.
    Local refused(Refusal refusal) {
        recording_.set(Outcome::denied, std::move(refusal.reason));
        if (!refusal.host.empty()) record_.host = std::move(refusal.host);
        return Local{static_cast<http::status>(refusal.status), std::move(refusal.error), std::move(refusal.hint),
                     std::move(refusal.headers)};
    }

    // What a request's stages came to: a response the proxy writes itself
    // (and whether the connection stays open after it), or the request went
    // upstream (or the client left) and the connection stays open or not.
    struct Step {
        std::optional<Local> response;
        bool keep_open = false;
        static Step answer(Local local, bool keep_alive = false) { return Step{std::move(local), keep_alive}; }
        static Step forwarded(bool keep_open) { return Step{std::nullopt, keep_open}; }
        static Step close() { return Step{std::nullopt, false}; }
    };

    net::awaitable<bool> one_request();
    void begin_request();
    net::awaitable<Step> handle(const HeadResult& result);
    bool parse_head(std::size_t consumed);
    net::awaitable<bool> read_body(bool expect_continue);
    net::awaitable<std::optional<Step>> wait_for_approval(const policy::Gateway& gateway, const policy::Action* action,
                                                          std::chrono::seconds timeout, bool keep_alive);
    net::awaitable<bool> respond(const Local& local, bool keep_alive);
    net::awaitable<Step> forward(const policy::Gateway& gateway, const policy::ConnectorInstance* connector,
                                 const std::string& host, std::uint16_t port);
    std::optional<Local> put_credential(const policy::Gateway& gateway, const policy::ConnectorInstance* connector,
                                        stage::UpstreamHeaders& how);
    net::awaitable<std::optional<Local>> connect_upstream(const std::string& host, std::uint16_t port,
                                                          const std::vector<IpAddress>& addresses);
    net::awaitable<bool> relay_response(bool head_request, bool client_keep_alive);
    net::awaitable<std::uint64_t> stream_request_body();

    Session& session_;
    ProxyServer::Impl& impl_;
    ConnectionContext& context_;
    Stream& client_;
    beast::flat_buffer& buffer_;
    std::optional<http::request_parser<http::buffer_body>> parser_;
    std::string body_;  // the part read for classification
    bool sent_continue_ = false;

    std::optional<Stream> upstream_;
    std::string upstream_host_;
    std::uint16_t upstream_port_ = 0;
    beast::flat_buffer upstream_buffer_;

    // The request being handled: its traffic record, outcome and reason
    // (which its response headers and body repeat).
    Recording recording_;
    TrafficRecord& record_ = recording_.record();
    std::string credential_format_;  // the deciding action's route's own credential format ("" for the connector's)
};

}  // namespace detail

}  // namespace tameflare::proxy
