#include "daemon/proxy/server.h"

#include "common/log.h"
#include "daemon/proxy/asio.h"
#include "daemon/proxy/credential.h"
#include "daemon/proxy/liveness.h"
#include "daemon/proxy/request_head.h"
#include "daemon/proxy/resolver.h"
#include "daemon/proxy/sniffer.h"
#include "daemon/proxy/stage/destination.h"
#include "daemon/proxy/stage/request_gate.h"
#include "daemon/proxy/stage/upstream_headers.h"
#include "daemon/proxy/tunnel.h"

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

namespace tameflare::proxy {

namespace {

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
std::size_t body_piece(const boost::optional<std::uint64_t>& length) {
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

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
    return out;
}

std::string_view view(boost::beast::string_view text) {
    return {text.data(), text.size()};
}

Endpoint to_endpoint(const tcp::endpoint& endpoint) {
    Endpoint out;
    auto address = endpoint.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        address = net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6());
    }
    out.address = IpAddress::parse(address.to_string()).value_or(IpAddress{});
    out.port = endpoint.port();
    return out;
}

tcp::endpoint to_asio(const Endpoint& endpoint) {
    return {net::ip::make_address(endpoint.address.to_string()), endpoint.port};
}

using stage::Mode;
using stage::Refusal;

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
std::string received_alert(const error_code& error) {
    if (error.category() != net::error::get_ssl_category()) return {};
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(error.value()));
    if (reason <= SSL_AD_REASON_OFFSET || reason >= SSL_AD_REASON_OFFSET + 256) return {};
    return SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET);
}

}  // namespace

std::string redact_target(std::string_view target) {
    const auto query = target.find('?');
    if (query == std::string_view::npos) return std::string(target);
    static constexpr std::string_view kSecret[] = {"token", "key",  "secret",    "password",   "passwd",  "signature",
                                                   "sig",   "auth", "code",      "credential", "session", "jwt",
                                                   "pass",  "pwd",  "client_id", "private"};
    std::string out(target.substr(0, query + 1));
    std::string_view rest = target.substr(query + 1);
    bool first = true;
    while (true) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        if (!first) out += '&';
        first = false;
        const auto eq = pair.find('=');
        const std::string name = lower(pair.substr(0, eq));
        const bool secret = std::any_of(std::begin(kSecret), std::end(kSecret),
                                        [&](std::string_view word) { return name.find(word) != std::string::npos; });
        if (secret && eq != std::string_view::npos) {
            out += pair.substr(0, eq + 1);
            out += "REDACTED";
        } else {
            out += pair;
        }
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
    return out;
}

// ---------------------------------------------------------------------------
// The server's shared state.

class Session;

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
    std::list<std::weak_ptr<Session>> sessions;

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

    net::awaitable<void> accept_loop(tcp::acceptor& acceptor, Mode mode, std::uint64_t tag = 0);
    net::awaitable<void> purge_rate_limits();
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
        Clock::time_point started;
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
    [[nodiscard]] TrafficRecord new_record() const;
    void refuse_connection(const std::string& reason, const std::string& host);
    void refuse_connection(TrafficRecord record);
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
        reason_ = std::move(refusal.reason);
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
    void emit_record();
    net::awaitable<Step> handle(const HeadResult& result);
    bool parse_head(std::size_t consumed);
    net::awaitable<bool> read_body(bool expect_continue);
    net::awaitable<std::optional<Step>> wait_for_approval(const policy::Gateway& gateway, const policy::Action* action,
                                                          std::chrono::seconds timeout, bool keep_alive);
    net::awaitable<bool> respond(const Local& local, bool keep_alive);
    net::awaitable<bool> forward(const policy::Gateway& gateway, const policy::ConnectorInstance* connector,
                                 const std::string& host, std::uint16_t port);
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

    // The request being handled, for its response headers and traffic record.
    TrafficRecord record_;
    Clock::time_point started_;
    std::string label_ = "denied";
    std::string connector_name_;
    std::string action_;
    std::string credential_format_;  // the deciding action's route's own credential format ("" for the connector's)
    std::string reason_;
};

template <class Stream>
net::awaitable<bool> Exchange<Stream>::respond(const Local& local, bool keep_alive) {
    http::response<http::string_body> response{local.status, 11};
    response.set(http::field::content_type, "application/json");
    response.set("X-TameFlare-Decision", label_);
    response.set("X-TameFlare-Gateway", context_.gateway);
    response.set("X-TameFlare-Connector", connector_name_);
    response.set("X-TameFlare-Action", action_);
    response.set("X-TameFlare-Request-Id", record_.request_id);
    for (const auto& [name, value] : local.headers) response.set(name, value);
    nlohmann::json body;
    if (!local.error.empty()) {
        body = {{"error", local.error}, {"message", reason_}, {"hint", local.hint}};
    } else {
        body = {{"decision", label_}, {"gateway", context_.gateway}, {"connector", connector_name_},
                {"action", action_},  {"reason", reason_},           {"request_id", record_.request_id}};
    }
    response.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    response.keep_alive(keep_alive);
    response.prepare_payload();
    record_.status = static_cast<unsigned>(local.status);
    record_.decision = label_;
    record_.reason = reason_;
    beast::get_lowest_layer(client_).expires_after(impl_.options.client_idle_timeout);
    error_code error;
    co_await http::async_write(client_, response, net::redirect_error(kToken, error));
    co_return !error && keep_alive;
}

template <class Stream>
net::awaitable<bool> Exchange<Stream>::one_request() {
    auto result = co_await read_head(client_, buffer_, impl_.options.client_idle_timeout);
    if (!result) co_return false;
    begin_request();
    // The record is emitted when this request ends, however it ends.
    struct Emit {
        Exchange& self;
        ~Emit() { self.emit_record(); }
    } emit{*this};
    const Step step = co_await handle(*result);
    if (!step.response) co_return step.keep_open;
    // The one place the proxy answers a request itself.
    const auto value = co_await respond(*step.response, step.keep_open);
    co_return value;
}

template <class Stream>
void Exchange<Stream>::begin_request() {
    started_ = Clock::now();
    ++impl_.requests;
    record_.time = std::chrono::system_clock::now();
    record_.request_id = impl_.new_request_id();
    record_.gateway = context_.gateway;
    record_.agent = context_.agent;
    label_ = "denied";
    connector_name_.clear();
    action_.clear();
    credential_format_.clear();
    reason_.clear();
    body_.clear();
    sent_continue_ = false;
}

template <class Stream>
void Exchange<Stream>::emit_record() {
    record_.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_);
    if (record_.decision.empty()) record_.decision = label_;
    if (record_.reason.empty()) record_.reason = reason_;
    record_.connector = connector_name_;
    record_.action = action_;
    impl_.record(std::move(record_));
    record_ = TrafficRecord{};
}

// The request's stages in order: the head, the gate, the gateway and its
// connector, the body the connector needs, the decision, the approval wait,
// then upstream.
template <class Stream>
net::awaitable<typename Exchange<Stream>::Step> Exchange<Stream>::handle(const HeadResult& result) {
    if (result.status == HeadResult::Status::bad) {
        reason_ = result.error;
        record_.decision = "error";
        co_return Step::answer(
            {http::status::bad_request, "bad_request", "send one well-formed HTTP/1.1 request head"});
    }
    const RequestHead& head = result.head;
    record_.method = head.method;
    record_.path = redact_target(head.target);
    if (!parse_head(result.consumed)) {
        reason_ = "malformed request head";
        co_return Step::answer({http::status::bad_request, "bad_request", ""});
    }
    auto& request = parser_->get();
    const bool has_body = !parser_->is_done();

    // The explicit proxy's login names the gateway (the same on every
    // request of a connection); then where the request goes (request_gate.h).
    if (context_.mode == Mode::explicit_plain) {
        const auto header = request.find(http::field::proxy_authorization);
        auto login = stage::explicit_login(
            *impl_.services.config->snapshot(),
            header == request.end() ? std::nullopt : std::optional<std::string_view>(view(header->value())),
            context_.gateway);
        if (auto* refusal = std::get_if<Refusal>(&login)) co_return Step::answer(refused(std::move(*refusal)));
        context_.gateway = std::move(std::get<std::string>(login));
        record_.gateway = context_.gateway;
    }
    auto gated = stage::gate_request({context_.mode, context_.verified_name, context_.tls, context_.port},
                                     {head.method, head.target, head.host});
    if (auto* refusal = std::get_if<Refusal>(&gated)) co_return Step::answer(refused(std::move(*refusal)));
    const stage::Target& target = std::get<stage::Target>(gated);
    if (target.from_absolute_form) {
        context_.port = target.port;
        request.target(target.path);
        record_.path = redact_target(target.path);
    }
    record_.host = target.host;

    const auto config = impl_.services.config->snapshot();
    const policy::Gateway* gateway = config->gateway(context_.gateway);
    if (gateway == nullptr) {
        reason_ = "gateway \"" + context_.gateway + "\" is not configured";
        co_return Step::answer({});
    }
    const policy::ConnectorInstance* connector = gateway->connector_for_host(target.host);
    session_.set_scope(gateway->name, connector ? connector->name : "", connector ? connector->def->name : "");
    connector_name_ = connector ? connector->name : "";

    // Read the body the connector may need, up to the bound.
    bool body_complete = !has_body;
    if (has_body && connector != nullptr && connector->def->body != policy::BodyMode::none) {
        if (!co_await read_body(head.expect_continue)) co_return Step::close();
        body_complete = parser_->is_done();
    }

    const auto kill = impl_.kill.load();
    policy::EvalContext eval{context_.agent, Clock::now(), kill.get(), &impl_.limiter};
    const std::string method(head.method);
    const auto evaluation = policy::evaluate(*gateway,
                                             policy::Request{method, target.host, target.path, head.content_type, body_,
                                                             body_complete, head.method_override},
                                             eval);
    const auto& decision = evaluation.decision;
    label_ = std::string(policy::to_string(decision.label));
    reason_ = decision.reason;
    const policy::Action* deciding = nullptr;
    if (decision.deciding_action < evaluation.actions.size()) {
        deciding = &evaluation.actions[decision.deciding_action];
        action_ = deciding->type;
        credential_format_ = deciding->credential_format;
    } else if (connector == nullptr) {
        action_ = "http.unknown";  // a host no connector serves (forwarded only where not enforced)
    }
    const bool keep_alive = head.keep_alive && parser_->is_done();

    switch (decision.verdict) {
        case policy::Verdict::deny:
        case policy::Verdict::rate_limited: co_return Step::answer(refusal_for(decision), keep_alive);
        case policy::Verdict::hold: {
            auto refused_by = co_await wait_for_approval(*gateway, deciding, decision.approval_timeout, keep_alive);
            if (refused_by) co_return std::move(*refused_by);
            break;
        }
        case policy::Verdict::forward: break;
    }
    const bool keep_open = co_await forward(*gateway, connector, target.host, target.port);
    co_return Step::forwarded(keep_open);
}

// The request parser over the head read_head() found well-formed.
template <class Stream>
bool Exchange<Stream>::parse_head(std::size_t consumed) {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(kMaxHeadBytes));
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // boost::none misbehaves in Beast 1.74
    parser_->eager(false);
    error_code error;
    parser_->put(net::buffer(buffer_.data().data(), consumed), error);
    buffer_.consume(consumed);
    return !error && parser_->is_header_done();
}

// Reads up to max_body_bytes of the body into body_ for classification
// (after a 100 Continue when the client waits for one); false when the
// client is gone.
template <class Stream>
net::awaitable<bool> Exchange<Stream>::read_body(bool expect_continue) {
    error_code error;
    if (expect_continue) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await net::async_write(client_, net::buffer(kContinue.data(), kContinue.size()),
                                  net::redirect_error(kToken, error));
        if (error) co_return false;
        sent_continue_ = true;
    }
    auto& request = parser_->get();
    beast::get_lowest_layer(client_).expires_after(impl_.options.client_idle_timeout);
    while (!parser_->is_done() && body_.size() < impl_.options.max_body_bytes) {
        const std::size_t have = body_.size();
        body_.resize(std::min(impl_.options.max_body_bytes, have + 16384));
        request.body().data = body_.data() + have;
        request.body().size = body_.size() - have;
        co_await http::async_read_some(client_, buffer_, *parser_, net::redirect_error(kToken, error));
        body_.resize(body_.size() - request.body().size);
        if (error == http::error::need_buffer) error = {};
        if (error) co_return false;
    }
    record_.request_bytes = body_.size();
    co_return true;
}

// Holds the request for a human (or the kill switch): nullopt when approved,
// the response otherwise (denied, or no answer in time).
template <class Stream>
net::awaitable<std::optional<typename Exchange<Stream>::Step>> Exchange<Stream>::wait_for_approval(
    const policy::Gateway& gateway, const policy::Action* action, std::chrono::seconds timeout, bool keep_alive) {
    ApprovalRequest held;
    held.id = record_.request_id;
    held.gateway = gateway.name;
    held.agent = context_.agent;
    held.connector = connector_name_;
    held.action = action_;
    if (action != nullptr) {
        held.risk = std::string(policy::to_string(action->risk));
        held.parameters = action->parameters.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    held.reason = reason_;
    held.requested_at = record_.time;
    held.timeout = timeout;
    session_.holding() = true;
    session_.answer().reset();
    ++impl_.held;
    if (impl_.services.approvals != nullptr) {
        impl_.services.approvals->submit(
            held, [weak = session_.weak_from_this(), executor = client_.get_executor()](ApprovalAnswer answer) {
                net::post(executor, [weak, answer = std::move(answer)]() mutable {
                    if (auto session = weak.lock()) session->deliver(std::move(answer));
                });
            });
    }
    error_code error;
    auto& timer = session_.hold_timer();
    timer.expires_after(timeout);
    co_await timer.async_wait(net::redirect_error(kToken, error));
    session_.holding() = false;
    --impl_.held;
    auto answer = std::move(session_.answer());
    if (answer && session_.killed() && impl_.services.approvals != nullptr) {
        // The kill switch answered, not a human: the broker still holds it.
        impl_.services.approvals->withdraw(held.id);
    }
    if (!answer) {
        if (impl_.services.approvals != nullptr) impl_.services.approvals->withdraw(held.id);
        label_ = "approval_timeout";
        reason_ = "no answer within " + std::to_string(timeout.count()) + " s";
        co_return Step::answer({http::status::request_timeout});
    }
    if (!answer->approved) {
        label_ = "denied";
        reason_ = session_.killed() ? "kill switch active"
                                    : "denied by a human" + (answer->note.empty() ? "" : ": " + answer->note);
        Local local;
        if (session_.killed()) local.headers.emplace_back("X-TameFlare-Kill-Switch", "active");
        co_return Step::answer(std::move(local), keep_alive && !session_.killed());
    }
    label_ = "approved";
    reason_ = answer->note.empty() ? "approved" : "approved: " + answer->note;
    co_return std::nullopt;
}

template <class Stream>
net::awaitable<std::optional<typename Exchange<Stream>::Local>> Exchange<Stream>::connect_upstream(
    const std::string& host, std::uint16_t port, const std::vector<IpAddress>& addresses) {
    if (upstream_ && upstream_host_ == host && upstream_port_ == port &&
        beast::get_lowest_layer(*upstream_).socket().is_open()) {
        co_return std::nullopt;
    }
    if (upstream_) {
        error_code ignored;
        beast::get_lowest_layer(*upstream_).socket().close(ignored);
        session_.upstream_socket() = nullptr;
        upstream_.reset();
    }
    const auto executor = client_.get_executor();
    if constexpr (kIsTls<Stream>) {
        upstream_.emplace(beast::tcp_stream(executor), impl_.client_tls);
    } else {
        upstream_.emplace(executor);
    }
    upstream_buffer_.clear();
    auto& lowest = beast::get_lowest_layer(*upstream_);
    session_.upstream_socket() = &lowest.socket();
    error_code error;
    for (const auto& address : addresses) {
        lowest.expires_after(std::chrono::seconds(10));
        co_await lowest.async_connect(to_asio(Endpoint{address, port}), net::redirect_error(kToken, error));
        if (!error) break;
    }
    if (error) {
        reason_ = "cannot connect to " + host + " port " + std::to_string(port) + ": " + error.message();
        co_return Local{http::status::bad_gateway, "upstream_unreachable", "check that the upstream is up"};
    }
    lowest.socket().set_option(tcp::no_delay(true), error);
    if constexpr (kIsTls<Stream>) {
        SSL* ssl = upstream_->native_handle();
        const bool literal = IpAddress::parse(host).has_value();
        if (!literal) SSL_set_tlsext_host_name(ssl, host.c_str());
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (literal) {
            X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
        } else {
            X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
        }
        lowest.expires_after(std::chrono::seconds(30));
        co_await upstream_->async_handshake(net::ssl::stream_base::client, net::redirect_error(kToken, error));
        if (error) {
            const long verify = SSL_get_verify_result(ssl);
            reason_ = verify != X509_V_OK ? "upstream certificate of " + host +
                                                " failed verification: " + X509_verify_cert_error_string(verify)
                                          : "TLS handshake with " + host + " failed: " + error.message();
            label_ = "error";
            error_code ignored;
            lowest.socket().close(ignored);
            session_.upstream_socket() = nullptr;
            upstream_.reset();
            co_return Local{http::status::bad_gateway, "upstream_tls",
                            "the upstream's certificate must chain to the trust store (or the configured "
                            "upstream_ca_file) and name the host"};
        }
    }
    upstream_host_ = host;
    upstream_port_ = port;
    co_return std::nullopt;
}

template <class Stream>
net::awaitable<std::uint64_t> Exchange<Stream>::stream_request_body() {
    auto& request = parser_->get();
    http::request_serializer<http::buffer_body> serializer{request};
    error_code error;
    record_.overhead = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_);
    beast::get_lowest_layer(*upstream_).expires_after(impl_.options.upstream_timeout);
    co_await http::async_write_header(*upstream_, serializer, net::redirect_error(kToken, error));
    if (error) throw boost::system::system_error(error);
    std::uint64_t bytes = body_.size();
    bool first = !body_.empty();
    const std::size_t piece = body_piece(parser_->content_length_remaining());
    const auto chunk = std::make_unique_for_overwrite<char[]>(piece);
    const LargeReads large_reads(buffer_, piece);
    while (!serializer.is_done()) {
        if (first) {
            request.body().data = body_.data();
            request.body().size = body_.size();
            first = false;
        } else if (!parser_->is_done()) {
            request.body().data = chunk.get();
            request.body().size = piece;
            beast::get_lowest_layer(client_).expires_after(impl_.options.client_idle_timeout);
            co_await http::async_read_some(client_, buffer_, *parser_, net::redirect_error(kToken, error));
            if (error == http::error::need_buffer) error = {};
            if (error) throw boost::system::system_error(error);
            request.body().size = piece - request.body().size;
            // No bytes (a chunk header was read): a null buffer, or the
            // serializer would write an empty chunk, which ends the body.
            request.body().data = request.body().size == 0 ? nullptr : chunk.get();
            bytes += request.body().size;
        } else {
            request.body().data = nullptr;
            request.body().size = 0;
        }
        request.body().more = !parser_->is_done();
        beast::get_lowest_layer(*upstream_).expires_after(impl_.options.upstream_timeout);
        co_await http::async_write(*upstream_, serializer, net::redirect_error(kToken, error));
        if (error == http::error::need_buffer) error = {};
        if (error) throw boost::system::system_error(error);
    }
    co_return bytes;
}

template <class Stream>
net::awaitable<bool> Exchange<Stream>::relay_response(bool head_request, bool client_keep_alive) {
    error_code error;
    for (;;) {
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // boost::none misbehaves in Beast 1.74
        if (head_request) parser.skip(true);
        beast::get_lowest_layer(*upstream_).expires_after(impl_.options.upstream_timeout);
        co_await http::async_read_header(*upstream_, upstream_buffer_, parser, net::redirect_error(kToken, error));
        if (error) throw boost::system::system_error(error);
        auto& response = parser.get();
        response.set("X-TameFlare-Decision", label_);
        response.set("X-TameFlare-Gateway", context_.gateway);
        response.set("X-TameFlare-Connector", connector_name_);
        response.set("X-TameFlare-Action", action_);
        const unsigned status = response.result_int();
        if (status / 100 == 1 && status != 101) {  // 100 Continue and friends: relay, then the real one
            http::response<http::empty_body> interim{response.result(), response.version()};
            for (const auto& field : response) interim.set(field.name_string(), field.value());
            co_await http::async_write(client_, interim, net::redirect_error(kToken, error));
            if (error) co_return false;
            continue;
        }
        record_.status = status;
        const bool upstream_reusable = response.keep_alive() && !parser.need_eof();
        // Connection is hop-by-hop: the client's connection stays open when
        // the client asked for that, whatever the upstream does with its own,
        // unless the body ends only when the upstream closes.
        const bool client_stays = client_keep_alive && !parser.need_eof();
        response.keep_alive(client_stays);
        http::response_serializer<http::buffer_body> serializer{response};
        beast::get_lowest_layer(client_).expires_after(impl_.options.upstream_timeout);
        if (status == 101) {  // WebSocket: the request was decided; now it is a byte stream
            co_await http::async_write_header(client_, serializer, net::redirect_error(kToken, error));
            if (error) co_return false;
            record_.forwarded = true;
            beast::get_lowest_layer(client_).expires_never();
            beast::get_lowest_layer(*upstream_).expires_never();
            const auto bytes = co_await tunnel(client_, buffer_, *upstream_, upstream_buffer_);
            record_.request_bytes += bytes.first;
            record_.response_bytes += bytes.second;
            co_return false;
        }
        const std::size_t piece = parser.is_done() ? 0 : body_piece(parser.content_length_remaining());
        const auto chunk = std::make_unique_for_overwrite<char[]>(piece);
        const LargeReads large_reads(upstream_buffer_, piece);
        // The head goes out together with the body bytes that arrived with it
        // (one write, one wake-up of the client); when none did, alone, so a
        // slow or streamed body does not hold it back.
        bool head_sent = false;
        while (!serializer.is_done()) {
            if (!parser.is_done()) {
                response.body().data = chunk.get();
                response.body().size = piece;
                std::size_t parsed = 0;
                if (upstream_buffer_.size() != 0) {
                    parsed = parser.put(upstream_buffer_.data(), error);
                    upstream_buffer_.consume(parsed);
                    if (error == http::error::need_buffer || error == http::error::need_more) error = {};
                }
                if (parsed == 0 && head_sent && !error) {
                    beast::get_lowest_layer(*upstream_).expires_after(impl_.options.upstream_timeout);
                    co_await http::async_read_some(*upstream_, upstream_buffer_, parser,
                                                   net::redirect_error(kToken, error));
                    if (error == http::error::need_buffer) error = {};
                }
                if (error) throw boost::system::system_error(error);
                response.body().size = piece - response.body().size;
                response.body().data = response.body().size == 0 ? nullptr : chunk.get();
                record_.response_bytes += response.body().size;
            } else {
                response.body().data = nullptr;
                response.body().size = 0;
            }
            response.body().more = !parser.is_done();
            beast::get_lowest_layer(client_).expires_after(impl_.options.upstream_timeout);
            co_await http::async_write(client_, serializer, net::redirect_error(kToken, error));
            head_sent = true;
            if (error == http::error::need_buffer) error = {};
            if (error) co_return false;
        }
        if (!upstream_reusable) {
            error_code ignored;
            beast::get_lowest_layer(*upstream_).socket().close(ignored);
        }
        co_return client_stays;
    }
}

template <class Stream>
net::awaitable<bool> Exchange<Stream>::forward(const policy::Gateway& gateway,
                                               const policy::ConnectorInstance* connector, const std::string& host,
                                               std::uint16_t port) {
    auto& request = parser_->get();
    const bool keep_alive = request.keep_alive();
    const bool drained = parser_->is_done();

    // One agreed destination (destination.h).
    auto agreed = stage::agree_destination(
        host, co_await impl_.resolver.resolve(host),
        context_.destination ? std::optional<IpAddress>(context_.destination->address) : std::nullopt,
        impl_.options.allowed_upstreams);
    if (auto* refusal = std::get_if<stage::DestinationRefusal>(&agreed)) {
        label_ = "denied";
        reason_ = std::move(refusal->reason);
        const bool keep = keep_alive && drained && refusal->keep_connection;
        const Local local{};
        const auto value = co_await respond(local, keep);
        co_return value;
    }
    const auto& addresses = std::get<std::vector<IpAddress>>(agreed);

    // Credentials: the agent's own are removed, the vault's put in; hop-by-hop
    // headers stay here (upstream_headers.h).
    stage::UpstreamHeaders how{std::nullopt, parser_->upgrade(), keep_alive, sent_continue_, record_.request_id};
    if (connector != nullptr && !connector->credential.empty()) {
        std::optional<std::string> secret;
        if (impl_.services.credentials != nullptr)
            secret = impl_.services.credentials->credential(connector->credential);
        if (!secret) {
            label_ = "error";
            reason_ = "the vault has no credential \"" + connector->credential + "\" for connector \"" +
                      connector->name + "\" of gateway \"" + gateway.name + "\"";
            const Local local{http::status::bad_gateway, "credential_missing", "tf vault set " + connector->credential};
            const auto value = co_await respond(local, keep_alive && drained);
            co_return value;
        }
        // The route's own spelling first (github's git endpoints take HTTP Basic), else the connector's.
        how.credential.emplace(
            connector->credential_format.header,
            render_credential(credential_format_.empty() ? connector->credential_format.format : credential_format_,
                              *secret));
        OPENSSL_cleanse(secret->data(), secret->size());
    }
    stage::rewrite_upstream_headers(request.base(), how);
    if (how.credential) OPENSSL_cleanse(how.credential->second.data(), how.credential->second.size());

    // The record is durable before a byte goes upstream; the write overlaps
    // the connect.
    {
        TrafficRecord durable = record_;
        durable.decision = label_;
        durable.reason = reason_;
        durable.connector = connector_name_;
        durable.action = action_;
        durable.forwarded = true;
        session_.start_commit(std::move(durable));
    }
    if (auto failure = co_await connect_upstream(host, port, addresses)) {
        {
            const auto value = co_await respond(*failure, keep_alive && drained);
            co_return value;
        }
    }
    if (const auto unlogged = co_await session_.await_commit(); !unlogged.empty()) {
        label_ = "error";
        reason_ = "not forwarded: the traffic log cannot record it (" + unlogged + ")";
        const Local local{http::status::service_unavailable, "store_unavailable",
                          "tameflared cannot write its traffic log (disk full?) and forwards nothing it cannot "
                          "record; see journalctl -u tameflared"};
        const auto value = co_await respond(local, false);
        co_return value;
    }
    record_.forwarded = true;
    const bool head_request = request.method() == http::verb::head;
    std::string failure;
    try {
        record_.request_bytes = co_await stream_request_body();
        {
            const auto value = co_await relay_response(head_request, keep_alive);
            co_return value;
        }
    } catch (const boost::system::system_error& error) {
        failure = error.code().message();
    }
    if (record_.status == 0 && !session_.killed()) {
        label_ = "error";
        reason_ = "upstream " + host + ": " + failure;
        {
            const Local local = Local{http::status::bad_gateway, "upstream_failed", ""};
            co_await respond(local, false);
        }
    }
    co_return false;
}

// ---------------------------------------------------------------------------
// Connection setup: origin, protocol detection, TLS, CONNECT, raw TCP.

net::awaitable<std::optional<Sniffed>> Session::peek(std::chrono::milliseconds timeout, bool& timed_out) {
    timed_out = false;
    auto& socket = stream_.socket();
    std::vector<std::uint8_t> bytes(kMaxClientHelloBytes);
    const auto deadline = Clock::now() + timeout;
    int want = 1;
    for (;;) {
        ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want);
        net::steady_timer timer(socket.get_executor());
        timer.expires_at(deadline);
        timer.async_wait([&socket, &timed_out](error_code error) {
            if (!error) {
                timed_out = true;
                socket.cancel();
            }
        });
        error_code error;
        co_await socket.async_wait(tcp::socket::wait_read, net::redirect_error(kToken, error));
        timer.cancel();
        if (error) co_return std::nullopt;  // closed, or timed out (timed_out says which)
        const auto n = ::recv(socket.native_handle(), bytes.data(), bytes.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n <= 0) co_return std::nullopt;
        auto sniffed = sniff(std::span(bytes.data(), static_cast<std::size_t>(n)));
        if (sniffed.protocol != Protocol::need_more) {
            want = 1;
            ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want);
            co_return sniffed;
        }
        if (static_cast<std::size_t>(n) >= bytes.size()) co_return Sniffed{Protocol::bad_tls, "", {}, "too long"};
        want = static_cast<int>(n) + 1;
    }
}

// A record of this connection's gateway and agent, stamped now.
TrafficRecord Session::new_record() const {
    TrafficRecord record;
    record.time = std::chrono::system_clock::now();
    record.request_id = impl_->new_request_id();
    record.gateway = context_.gateway;
    record.agent = context_.agent;
    return record;
}

void Session::refuse_connection(const std::string& reason, const std::string& host) {
    TrafficRecord record = new_record();
    record.host = host;
    record.reason = reason;
    refuse_connection(std::move(record));
}

// `record` says what was refused and why; it is recorded as denied, and the connection closed.
void Session::refuse_connection(TrafficRecord record) {
    record.decision = "denied";
    impl_->record(std::move(record));
    close_all();
}

// A client that does not trust the interception CA (a runtime with a trust
// store of its own) aborts the handshake with an alert, or (Java's
// HttpClient) hangs up once it has our certificate, without one: recorded,
// counted in the metrics by its record, and logged once per agent and name,
// so that the admin sees why a build fails. `answered`: the proxy had sent
// its part of the handshake (the certificate among it).
void Session::record_refused_handshake(const error_code& error, bool answered, const std::string& name) {
    const std::string alert = received_alert(error);
    std::string how = "TLS alert \"" + alert + "\"";
    if (alert.empty()) {
        if (!answered || error != net::ssl::error::stream_truncated) return;
        how = "it hung up on receiving it, without an alert";
    }
    TrafficRecord record = new_record();
    record.connector = "tls";
    record.action = "tls.certificate_refused";
    record.host = name;
    record.path = std::to_string(context_.port);
    record.decision = "error";
    record.reason = "the client refused the interception certificate for \"" + name + "\" (" + how +
                    "): it does not trust tameflare's CA; a runtime with a trust store of its own needs it "
                    "(docs/recipes.md)";
    if (impl_->first_refusal(context_.agent, name)) {
        log(LogLevel::warning, record.reason,
            {{"GATEWAY", record.gateway},
             {"AGENT", record.agent},
             {"HOST", name},
             {"TLS_ALERT", alert.empty() ? "none" : alert}});
    }
    impl_->record(std::move(record));
}

bool Session::raw_rule_may_apply() {
    const auto config = impl_->services.config->snapshot();
    const auto* gateway = config->gateway(context_.gateway);
    if (gateway == nullptr) return false;
    return std::any_of(gateway->tcp.begin(), gateway->tcp.end(),
                       [&](const policy::TcpRule& rule) { return rule.port == context_.port; });
}

// `name` is the CONNECT target (explicit), a TLS server name (TLS passed
// through) or "" (transparent raw TCP). A `cidr` rule matches the addresses
// the tunnel would go to; a `host` rule matches when the name resolves to the
// destination. In explicit mode the destination is the daemon's own answer
// for the CONNECT target, so the target naming the rule is enough. In
// transparent mode the agent chose both the address it dialed and any server
// name it sent: only the address counts, so an allowed name sent to another
// address (a served host's, say) matches nothing.
net::awaitable<Session::TcpMatch> Session::match_tcp_rule(const std::string& name,
                                                          std::shared_ptr<const policy::Config> config) {
    TcpMatch match;
    match.started = Clock::now();
    match.config = std::move(config);
    if (context_.destination) {
        match.addresses = {context_.destination->address};
    } else {
        match.addresses = co_await impl_->resolver.resolve(name);
    }
    const auto* gateway = match.config->gateway(context_.gateway);
    if (gateway == nullptr) co_return match;
    const auto& addresses = match.addresses;
    for (const auto& rule : gateway->tcp) {
        if (rule.port != context_.port) continue;
        if (!rule.cidr.empty()) {
            const auto cidr = Cidr::parse(rule.cidr);
            if (cidr &&
                std::all_of(addresses.begin(), addresses.end(),
                            [&](const IpAddress& a) { return cidr->contains(a); }) &&
                !addresses.empty()) {
                match.rule = &rule;
                break;
            }
        } else if (!context_.destination) {
            if (rule.host == name) {
                match.rule = &rule;
                break;
            }
        } else {
            const auto known = co_await impl_->resolver.resolve(rule.host);
            if (std::find(known.begin(), known.end(), context_.destination->address) != known.end()) {
                match.rule = &rule;
                break;
            }
        }
    }
    co_return match;
}

net::awaitable<void> Session::raw_tcp(const std::string& name) {
    auto match = co_await match_tcp_rule(name, impl_->services.config->snapshot());
    co_await tunnel_tcp(name, std::move(match), TcpKind::raw);
}

// The kill switch, the rule and the address policy, then the record committed
// before the first byte is relayed. Whatever the client sent is still in the
// socket (the sniffer only peeks), so a TLS ClientHello reaches the upstream
// as it was sent.
net::awaitable<void> Session::tunnel_tcp(const std::string& name, TcpMatch match, TcpKind kind) {
    const bool tls = kind == TcpKind::tls_passthrough;
    auto& addresses = match.addresses;
    set_scope(context_.gateway, "tcp", "tcp");
    const auto kill = impl_->kill.load();
    const std::string target = name.empty() ? (addresses.empty() ? std::string("?") : addresses[0].to_string()) : name;
    const std::string where = target + ":" + std::to_string(context_.port);
    const std::string what = tls ? "TLS passthrough to " : "raw TCP to ";
    if (kill->covers(context_.gateway, "tcp", "tcp")) {
        refuse_connection("kill switch active", target);
        co_return;
    }
    std::erase_if(addresses,
                  [&](const IpAddress& a) { return !upstream_allowed(a, impl_->options.allowed_upstreams); });
    if (match.rule == nullptr || addresses.empty()) {
        std::string reason = what + where + " is not allowed by gateway \"" + context_.gateway + "\" (add a tcp rule)";
        if (match.rule == nullptr && context_.port == 22) {
            reason = "SSH to " + where + " is not allowed by gateway \"" + context_.gateway +
                     "\": SSH is not proxied, so neither decided nor given a vault credential; use an HTTPS remote "
                     "(agents' git takes git@HOST: remotes over HTTPS for hosts whose connector lists them in "
                     "ssh_remotes, github.com among them), or add a tcp rule for port 22";
        } else if (match.rule != nullptr) {
            reason = what + where + " goes to an address the proxy may not reach";
        }
        TrafficRecord refused = new_record();
        refused.connector = "tcp";  // so that tf policy suggest can draft the tcp rule it lacked
        refused.action = tls ? "tcp.tls_passthrough" : "tcp.connect";
        refused.host = target;
        refused.path = std::to_string(context_.port);
        refused.reason = reason;
        refuse_connection(std::move(refused));
        co_return;
    }
    TrafficRecord record = new_record();
    record.connector = "tcp";
    record.action = tls ? "tcp.tls_passthrough" : "tcp.connect";
    record.host = target;
    record.path = std::to_string(context_.port);
    record.decision = "allowed";
    record.reason = "tcp rule " + std::to_string(match.rule->index);
    if (tls) record.reason += "; no connector serves \"" + name + "\": TLS passed through, not intercepted";
    record.forwarded = true;
    start_commit(record);
    record.forwarded = false;

    beast::tcp_stream upstream(stream_.get_executor());
    upstream_socket_ = &upstream.socket();
    error_code error;
    for (const auto& address : addresses) {
        upstream.expires_after(std::chrono::seconds(10));
        co_await upstream.async_connect(to_asio(Endpoint{address, context_.port}), net::redirect_error(kToken, error));
        if (!error) break;
    }
    const auto unlogged = co_await await_commit();
    if (error) {
        record.decision = "error";
        record.reason = "cannot connect: " + error.message();
    } else if (!unlogged.empty()) {
        record.decision = "error";
        record.reason = "not forwarded: the traffic log cannot record it (" + unlogged + ")";
    }
    if (!error && unlogged.empty()) {
        record.forwarded = true;
        upstream.expires_never();
        stream_.expires_never();
        beast::flat_buffer none_in, none_out;
        const auto bytes = co_await tunnel(stream_, none_in, upstream, none_out);
        record.request_bytes = bytes.first;
        record.response_bytes = bytes.second;
    }
    upstream_socket_ = nullptr;
    record.latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - match.started);
    impl_->record(std::move(record));
    close_all();
}

net::awaitable<void> Session::intercept(beast::flat_buffer& buffer) {
    const bool raw_possible = raw_rule_may_apply();
    bool timed_out = false;
    const auto wait = raw_possible
                          ? std::chrono::duration_cast<std::chrono::milliseconds>(impl_->options.server_first_wait)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(impl_->options.client_idle_timeout);
    const auto sniffed = co_await peek(wait, timed_out);
    if (!sniffed) {
        if (timed_out && raw_possible) co_await raw_tcp(context_.verified_name);
        co_return;
    }
    switch (sniffed->protocol) {
        case Protocol::http: {
            Exchange<beast::tcp_stream> exchange(*this, stream_, buffer);
            co_await exchange.serve();
            co_return;
        }
        case Protocol::tls: {
            std::string name = sniffed->server_name;
            if (!context_.verified_name.empty() && !name.empty() && name != context_.verified_name) {
                refuse_connection("TLS server name \"" + name + "\" does not match the CONNECT target \"" +
                                      context_.verified_name + "\"",
                                  name);
                co_return;
            }
            if (name.empty()) name = context_.verified_name;
            context_.verified_name = name;
            context_.tls = true;
            // A name no connector of the gateway serves (the lookup requests
            // are decided by), to a destination a tcp rule allows: tunnelled
            // as it is, ClientHello included, and never intercepted. A served
            // name is always intercepted, whatever the tcp rules say.
            if (raw_possible && !name.empty()) {
                auto config = impl_->services.config->snapshot();
                const auto* gateway = config->gateway(context_.gateway);
                if (gateway != nullptr && gateway->connector_for_host(name) == nullptr) {
                    auto match = co_await match_tcp_rule(name, std::move(config));
                    if (match.rule != nullptr) {
                        co_await tunnel_tcp(name, std::move(match), TcpKind::tls_passthrough);
                        co_return;
                    }
                }
            }
            const std::string leaf_name =
                !name.empty() ? name : (context_.destination ? context_.destination->address.to_string() : "");
            if (leaf_name.empty()) {
                refuse_connection("TLS without a server name", "");
                co_return;
            }
            std::shared_ptr<const LeafCertificate> leaf;
            try {
                leaf = impl_->services.ca->leaf_for(leaf_name);
            } catch (const std::exception& error) {
                refuse_connection(std::string("cannot mint a certificate: ") + error.what(), leaf_name);
                co_return;
            }
            TlsStream tls(std::move(stream_), impl_->server_tls);
            client_socket_ = &beast::get_lowest_layer(tls).socket();
            SSL_use_certificate(tls.native_handle(), leaf->certificate.get());
            SSL_use_PrivateKey(tls.native_handle(), leaf->key.get());
            beast::get_lowest_layer(tls).expires_after(std::chrono::seconds(15));
            error_code error;
            co_await tls.async_handshake(net::ssl::stream_base::server, net::redirect_error(kToken, error));
            if (!error) {
                Exchange<TlsStream> exchange(*this, tls, buffer);
                co_await exchange.serve();
            } else {
                const bool answered = BIO_number_written(SSL_get_wbio(tls.native_handle())) > 0;
                record_refused_handshake(error, answered, leaf_name);
            }
            close_all();
            client_socket_ = nullptr;
            co_return;
        }
        case Protocol::bad_tls: refuse_connection("malformed TLS ClientHello: " + sniffed->error, ""); co_return;
        case Protocol::other: co_await raw_tcp(context_.verified_name); co_return;
        case Protocol::need_more: co_return;
    }
}

net::awaitable<void> Session::serve_explicit() {
    beast::flat_buffer buffer;
    auto result = co_await read_head(stream_, buffer, impl_->options.client_idle_timeout);
    if (!result) co_return;
    if (result->status == HeadResult::Status::ok && result->head.method == "CONNECT") {
        // Authenticate with a throwaway exchange's rules, then tunnel.
        http::request_parser<http::empty_body> parser;
        parser.eager(false);
        error_code error;
        parser.put(net::buffer(buffer.data().data(), result->consumed), error);
        buffer.consume(result->consumed);
        const auto& request = parser.get();
        const auto header = request.find(http::field::proxy_authorization);
        auto login = stage::explicit_login(
            *impl_->services.config->snapshot(),
            header == request.end() ? std::nullopt : std::optional<std::string_view>(view(header->value())));
        auto gated = stage::gate_connect(result->head.target, buffer.size());
        const Refusal* refusal = std::get_if<Refusal>(&login);
        if (refusal == nullptr) refusal = std::get_if<Refusal>(&gated);
        std::string_view reply = "HTTP/1.1 200 Connection established\r\n\r\n";
        if (refusal != nullptr && refusal->status == 407) {
            reply =
                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tameflare\"\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n";
        } else if (refusal != nullptr) {
            reply = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        }
        co_await net::async_write(stream_, net::buffer(reply.data(), reply.size()), net::redirect_error(kToken, error));
        const auto* tunnel = std::get_if<stage::TunnelTarget>(&gated);
        if (refusal != nullptr || error) {
            if (const auto* gateway = std::get_if<std::string>(&login)) context_.gateway = *gateway;
            const std::string host = tunnel != nullptr ? tunnel->host : std::get<Refusal>(gated).host;
            refuse_connection(refusal != nullptr ? refusal->reason : "", host);
            co_return;
        }
        const std::string gateway_name = std::get<std::string>(login);
        context_.mode = Mode::explicit_tunnel;
        context_.gateway = gateway_name;
        context_.agent = "explicit";
        context_.verified_name = tunnel->host;
        context_.port = tunnel->port;
        co_await intercept(buffer);
        co_return;
    }
    context_.mode = Mode::explicit_plain;
    context_.agent = "explicit";
    Exchange<beast::tcp_stream> exchange(*this, stream_, buffer);
    co_await exchange.serve();
}

net::awaitable<void> Session::run(std::shared_ptr<Session> self) {
    (void)self;
    try {
        error_code error;
        stream_.socket().set_option(tcp::no_delay(true), error);
        context_.client = to_endpoint(stream_.socket().remote_endpoint(error));
        if (context_.mode == Mode::explicit_plain) {
            co_await serve_explicit();
        } else {
            const auto local = to_endpoint(stream_.socket().local_endpoint(error));
            const AcceptedConnection accepted{context_.client, local, stream_.socket().native_handle(),
                                              context_.listener};
            auto origin = impl_->services.origins != nullptr ? impl_->services.origins->lookup(accepted) : std::nullopt;
            if (!origin) {
                refuse_connection("no origin recorded for a redirected connection from " + context_.client.to_string(),
                                  "");
                co_return;
            }
            context_.gateway = std::move(origin->gateway);
            context_.agent = std::move(origin->agent);
            context_.destination = origin->destination;
            context_.port = origin->destination.port;
            set_scope(context_.gateway, "", "");
            if (impl_->kill.load()->covers(context_.gateway, "", "")) {
                refuse_connection("kill switch active", "");
                co_return;
            }
            beast::flat_buffer buffer;
            co_await intercept(buffer);
        }
    } catch (const std::exception& error) {
        log(LogLevel::debug, std::string("proxy connection ended: ") + error.what());
    }
    close_all();
}

// ---------------------------------------------------------------------------

net::awaitable<void> ProxyServer::Impl::accept_loop(tcp::acceptor& acceptor, Mode mode, std::uint64_t tag) {
    for (;;) {
        auto& context = pick_context();
        tcp::socket socket(context);
        error_code error;
        co_await acceptor.async_accept(socket, net::redirect_error(kToken, error));
        if (error == net::error::operation_aborted || !acceptor.is_open()) co_return;
        if (error) {  // EMFILE and the like: back off instead of spinning
            log(LogLevel::warning, "proxy accept failed: " + error.message());
            net::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(net::redirect_error(kToken, error));
            continue;
        }
        auto session = std::make_shared<Session>(shared_from_this(), std::move(socket), mode);
        session->set_listener(tag);
        session->enlist();
        net::co_spawn(context, session->run(session), net::detached);
    }
}

// Agents that stopped sending leave their windows behind: drop them every
// minute, so the limiter's memory follows the active agents.
net::awaitable<void> ProxyServer::Impl::purge_rate_limits() {
    net::steady_timer timer(*contexts.front());
    for (;;) {
        timer.expires_after(std::chrono::seconds(60));
        error_code error;
        co_await timer.async_wait(net::redirect_error(kToken, error));
        if (error) co_return;
        limiter.purge(Clock::now(), std::chrono::hours(1));
    }
}

namespace {

int select_http11(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
                  unsigned int in_length, void*) {
    static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, kHttp11, sizeof kHttp11, in, in_length) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;  // no http/1.1 offered: carry on without ALPN
}

tcp::acceptor bind(net::io_context& context, const Endpoint& endpoint) {
    tcp::acceptor acceptor(context);
    const auto address = to_asio(endpoint);
    acceptor.open(address.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(address);
    acceptor.listen(4096);
    return acceptor;
}

}  // namespace

ProxyServer::ProxyServer(ProxyOptions options, ProxyServices services)
    : impl_(std::make_shared<Impl>(std::move(options), services)) {
    if (impl_->services.config == nullptr || impl_->services.ca == nullptr) {
        throw std::invalid_argument("the proxy needs a configuration and a CA");
    }
    unsigned threads = impl_->options.threads;
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < threads; ++i) impl_->contexts.push_back(std::make_unique<net::io_context>(1));
    RAND_bytes(reinterpret_cast<unsigned char*>(&impl_->id_prefix), sizeof impl_->id_prefix);

    SSL_CTX* server = impl_->server_tls.native_handle();
    SSL_CTX_set_min_proto_version(server, TLS1_2_VERSION);
    SSL_CTX_set_mode(server, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(server, select_http11, nullptr);
    SSL_CTX_set_session_cache_mode(server, SSL_SESS_CACHE_OFF);

    SSL_CTX* client = impl_->client_tls.native_handle();
    SSL_CTX_set_min_proto_version(client, TLS1_2_VERSION);
    SSL_CTX_set_mode(client, SSL_MODE_RELEASE_BUFFERS);
    impl_->client_tls.set_verify_mode(net::ssl::verify_peer);
    if (impl_->options.upstream_ca_file.empty()) {
        impl_->client_tls.set_default_verify_paths();
    } else {
        impl_->client_tls.load_verify_file(impl_->options.upstream_ca_file);
    }
    static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(client, kAlpn, sizeof kAlpn);

    auto& first = *impl_->contexts.front();
    if (impl_->options.transparent_listen) impl_->transparent.emplace(bind(first, *impl_->options.transparent_listen));
    if (impl_->options.explicit_listen) impl_->explicit_proxy.emplace(bind(first, *impl_->options.explicit_listen));
}

ProxyServer::~ProxyServer() {
    stop();
}

void ProxyServer::start() {
    if (impl_->started) return;
    if (impl_->contexts.empty()) throw std::logic_error("a stopped proxy cannot be started again");
    impl_->started = true;
    auto& first = *impl_->contexts.front();
    if (impl_->transparent) {
        net::co_spawn(first, impl_->accept_loop(*impl_->transparent, Mode::transparent), net::detached);
    }
    if (impl_->explicit_proxy) {
        net::co_spawn(first, impl_->accept_loop(*impl_->explicit_proxy, Mode::explicit_plain), net::detached);
    }
    net::co_spawn(first, impl_->purge_rate_limits(), net::detached);
    for (auto& context : impl_->contexts) {
        impl_->threads.emplace_back([&context] {
            auto guard = net::make_work_guard(*context);
            context->run();
        });
    }
}

void ProxyServer::stop() {
    if (!impl_->started) return;
    stop_accepting();
    impl_->started = false;
    // Collected under the lock, closed outside it: the last reference to a
    // session may be dropped here, and ~Session takes the same lock.
    std::vector<std::shared_ptr<Session>> open_sessions;
    {
        std::lock_guard lock(impl_->sessions_mutex);
        for (const auto& weak : impl_->sessions) {
            if (auto session = weak.lock()) open_sessions.push_back(std::move(session));
        }
    }
    for (auto& session : open_sessions) {
        net::post(session->hold_timer().get_executor(), [session] { session->close_all(); });
    }
    open_sessions.clear();
    // Let traffic-log confirmations still on their way be delivered while the
    // contexts run, then refuse any later one.
    for (int waited = 0; impl_->lifeline->in_flight.load() > 0 && waited < 10000; ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
        std::lock_guard lock(impl_->lifeline->mutex);
        impl_->lifeline->alive = false;
    }
    for (auto& context : impl_->contexts) context->stop();
    for (auto& thread : impl_->threads) thread.join();
    impl_->threads.clear();
    // Destroying the contexts destroys the coroutines still suspended in them,
    // and with them the sessions (which hold the Impl: no cycle survives).
    impl_->transparent.reset();
    impl_->explicit_proxy.reset();
    impl_->contexts.clear();
}

void ProxyServer::add_listener(UniqueFd listening_socket, std::uint64_t tag) {
    if (tag == 0) throw std::invalid_argument("listener tag 0 is the main transparent listener's");
    if (impl_->contexts.empty()) throw std::logic_error("the proxy is stopped");
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    if (::getsockname(listening_socket.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
        throw std::system_error(errno, std::generic_category(), "getsockname of an added listener");
    }
    auto& first = *impl_->contexts.front();
    auto acceptor = std::make_shared<tcp::acceptor>(first);
    error_code error;
    acceptor->assign(local.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), listening_socket.get(), error);
    if (error) throw std::system_error(error, "adding a transparent listener");
    listening_socket.release();  // the acceptor owns it now
    net::post(first, [impl = impl_, acceptor, tag] {
        impl->added.emplace(tag, acceptor);
        net::co_spawn(
            *impl->contexts.front(),
            [impl, acceptor, tag]() -> net::awaitable<void> {
                co_await impl->accept_loop(*acceptor, Mode::transparent, tag);
            },
            net::detached);
    });
}

void ProxyServer::remove_listener(std::uint64_t tag) {
    if (impl_->contexts.empty()) return;
    net::post(*impl_->contexts.front(), [impl = impl_, tag] {
        const auto [begin, end] = impl->added.equal_range(tag);
        error_code ignored;
        for (auto it = begin; it != end; ++it) it->second->close(ignored);
        impl->added.erase(begin, end);
    });
}

std::optional<Endpoint> ProxyServer::transparent_endpoint() const {
    if (!impl_->transparent) return std::nullopt;
    return to_endpoint(impl_->transparent->local_endpoint());
}

std::optional<Endpoint> ProxyServer::explicit_endpoint() const {
    if (!impl_->explicit_proxy) return std::nullopt;
    return to_endpoint(impl_->explicit_proxy->local_endpoint());
}

void ProxyServer::set_kill_switch(const policy::KillSwitch& kill_switch) {
    auto next = std::make_shared<const policy::KillSwitch>(kill_switch);
    impl_->kill.store(next);
    std::vector<std::shared_ptr<Session>> severed;
    std::vector<std::shared_ptr<Session>> spared;  // released outside the lock: ~Session takes it
    {
        std::lock_guard lock(impl_->sessions_mutex);
        for (const auto& weak : impl_->sessions) {
            auto session = weak.lock();
            if (!session) continue;
            (session->in_scope(*next) ? severed : spared).push_back(std::move(session));
        }
    }
    spared.clear();
    for (auto& session : severed) {
        net::post(session->hold_timer().get_executor(), [session] { session->sever(); });
    }
}

Resolver& ProxyServer::resolver() {
    return impl_->resolver;
}

policy::KillSwitch ProxyServer::kill_switch() const {
    return *impl_->kill.load();
}

void ProxyServer::stop_accepting() {
    if (!impl_->started) return;
    net::post(*impl_->contexts.front(), [impl = impl_] {
        error_code ignored;
        if (impl->transparent) impl->transparent->close(ignored);
        if (impl->explicit_proxy) impl->explicit_proxy->close(ignored);
        for (auto& [tag, acceptor] : impl->added) acceptor->close(ignored);
        impl->added.clear();
    });
}

bool ProxyServer::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->started) return true;
    std::vector<net::io_context*> loops;
    for (const auto& context : impl_->contexts) loops.push_back(context.get());
    return loops_answer(loops, timeout);
}

void ProxyServer::record(TrafficRecord record) {
    if (record.request_id.empty()) record.request_id = impl_->new_request_id();
    impl_->record(std::move(record));
}

ProxyCounters ProxyServer::counters() const {
    return {impl_->open.load(), impl_->total.load(), impl_->requests.load(), impl_->held.load()};
}

}  // namespace tameflare::proxy
