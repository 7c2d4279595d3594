#include "daemon/proxy/server_internal.h"

namespace tameflare::proxy::detail {

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

void Session::refuse_connection(const std::string& reason, const std::string& host) {
    Recording recording;
    recording.begin(*impl_, context_);
    recording.record().host = host;
    refuse_connection(recording, reason);
}

// `recording` says what was refused; it is recorded as denied for `reason`, and the connection closed.
void Session::refuse_connection(Recording& recording, std::string reason) {
    recording.set(Outcome::denied, std::move(reason));
    recording.end(*impl_);
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
    Recording recording;
    recording.begin(*impl_, context_);
    TrafficRecord& record = recording.record();
    record.connector = "tls";
    record.action = "tls.certificate_refused";
    record.host = name;
    record.path = std::to_string(context_.port);
    recording.set(Outcome::error,
                  "the client refused the interception certificate for \"" + name + "\" (" + how +
                      "): it does not trust tameflare's CA; a runtime with a trust store of its own needs it "
                      "(docs/recipes.md)");
    if (impl_->first_refusal(context_.agent, name)) {
        log(LogLevel::warning, record.reason,
            {{"GATEWAY", record.gateway},
             {"AGENT", record.agent},
             {"HOST", name},
             {"TLS_ALERT", alert.empty() ? "none" : alert}});
    }
    recording.end(*impl_);
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
    const Dialer dialer(*impl_);
    set_scope(context_.gateway, "tcp", "tcp");
    const std::string target =
        name.empty() ? (match.addresses.empty() ? std::string("?") : match.addresses[0].to_string()) : name;
    if (impl_->kill.load()->covers(context_.gateway, "tcp", "tcp")) {
        refuse_connection("kill switch active", target);
        co_return;
    }
    Recording recording;
    recording.begin(*impl_, context_);
    TrafficRecord& record = recording.record();
    record.connector = "tcp";  // so that tf policy suggest can draft the tcp rule a refused one lacked
    record.action = tls ? "tcp.tls_passthrough" : "tcp.connect";
    record.host = target;
    record.path = std::to_string(context_.port);
    const auto addresses = dialer.reachable(std::move(match.addresses));
    if (match.rule == nullptr || addresses.empty()) {
        refuse_connection(recording, tunnel_refusal(target, match.rule != nullptr, tls));
        co_return;
    }
    recording.set(Outcome::allowed, "tcp rule " + std::to_string(match.rule->index));
    if (tls) record.reason += "; no connector serves \"" + name + "\": TLS passed through, not intercepted";
    start_commit(recording.durable());

    beast::tcp_stream upstream(stream_.get_executor());
    upstream_socket_ = &upstream.socket();
    const auto error = co_await dialer.connect(upstream, addresses, context_.port);
    const auto unlogged = co_await await_commit();
    if (error) {
        recording.set(Outcome::error, "cannot connect: " + error.message());
    } else if (!unlogged.empty()) {
        recording.set(Outcome::error, "not forwarded: the traffic log cannot record it (" + unlogged + ")");
    } else {
        record.forwarded = true;
        upstream.expires_never();
        stream_.expires_never();
        beast::flat_buffer none_in, none_out;
        const auto bytes = co_await tunnel(stream_, none_in, upstream, none_out);
        record.request_bytes = bytes.first;
        record.response_bytes = bytes.second;
    }
    upstream_socket_ = nullptr;
    recording.end(*impl_);
    close_all();
}

// Why a tunnel to `target` at the connection's port is refused: no tcp rule
// allows it (SSH gets its own words), or the rule's addresses are ones the
// proxy may not reach.
std::string Session::tunnel_refusal(const std::string& target, bool ruled, bool tls) const {
    const std::string where = target + ":" + std::to_string(context_.port);
    if (ruled)
        return (tls ? "TLS passthrough to " : "raw TCP to ") + where + " goes to an address the proxy may not reach";
    if (context_.port == 22) {
        return "SSH to " + where + " is not allowed by gateway \"" + context_.gateway +
               "\": SSH is not proxied, so neither decided nor given a vault credential; use an HTTPS remote "
               "(agents' git takes git@HOST: remotes over HTTPS for hosts whose connector lists them in "
               "ssh_remotes, github.com among them), or add a tcp rule for port 22";
    }
    return (tls ? "TLS passthrough to " : "raw TCP to ") + where + " is not allowed by gateway \"" + context_.gateway +
           "\" (add a tcp rule)";
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
            header == request.end() ? std::nullopt : std::optional<std::string_view>(as_view(header->value())));
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

}  // namespace tameflare::proxy::detail
