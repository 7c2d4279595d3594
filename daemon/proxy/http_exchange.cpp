#include "daemon/proxy/server_internal.h"

namespace tameflare::proxy::detail {

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
    // One configuration for the whole request: the login and the decision.
    const auto config = impl_.services.config->snapshot();
    if (context_.mode == Mode::explicit_plain) {
        const auto header = request.find(http::field::proxy_authorization);
        auto login = stage::explicit_login(
            *config, header == request.end() ? std::nullopt : std::optional<std::string_view>(view(header->value())),
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

// The two kinds of client stream a request arrives on.
template class Exchange<beast::tcp_stream>;
template class Exchange<TlsStream>;

}  // namespace tameflare::proxy::detail
