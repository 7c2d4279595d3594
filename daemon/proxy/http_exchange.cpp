#include "daemon/proxy/server_internal.h"

namespace tameflare::proxy::detail {

template <class Stream>
net::awaitable<bool> Exchange<Stream>::respond(const Local& local, bool keep_alive) {
    http::response<http::string_body> response{local.status, 11};
    response.set(http::field::content_type, "application/json");
    const std::string decision(recording_.decision());
    response.set("X-TameFlare-Decision", decision);
    response.set("X-TameFlare-Gateway", context_.gateway);
    response.set("X-TameFlare-Connector", record_.connector);
    response.set("X-TameFlare-Action", record_.action);
    response.set("X-TameFlare-Request-Id", record_.request_id);
    for (const auto& [name, value] : local.headers) response.set(name, value);
    nlohmann::json body;
    if (!local.error.empty()) {
        body = {{"error", local.error}, {"message", record_.reason}, {"hint", local.hint}};
    } else {
        body = {{"decision", decision},     {"gateway", context_.gateway}, {"connector", record_.connector},
                {"action", record_.action}, {"reason", record_.reason},    {"request_id", record_.request_id}};
    }
    response.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    response.keep_alive(keep_alive);
    response.prepare_payload();
    record_.status = static_cast<unsigned>(local.status);
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
    // The record goes to the sink when this request ends, however it ends.
    struct End {
        Exchange& self;
        ~End() { self.recording_.end(self.impl_); }
    } end{*this};
    const Step step = co_await handle(*result);
    if (!step.response) co_return step.keep_open;
    // The one place the proxy answers a request itself.
    const auto value = co_await respond(*step.response, step.keep_open);
    co_return value;
}

template <class Stream>
void Exchange<Stream>::begin_request() {
    ++impl_.requests;
    recording_.begin(impl_, context_);
    credential_format_.clear();
    body_.clear();
    sent_continue_ = false;
}

// The request's stages in order: the head, the gate, the gateway and its
// connector, the body the connector needs, the decision, the approval wait,
// then upstream.
template <class Stream>
net::awaitable<typename Exchange<Stream>::Step> Exchange<Stream>::handle(const HeadResult& result) {
    if (result.status == HeadResult::Status::bad) {
        recording_.set(Outcome::denied, result.error);
        co_return Step::answer(
            {http::status::bad_request, "bad_request", "send one well-formed HTTP/1.1 request head"});
    }
    const RequestHead& head = result.head;
    record_.method = head.method;
    record_.path = redact_target(head.target);
    if (!parse_head(result.consumed)) {
        recording_.set(Outcome::denied, "malformed request head");
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
            *config, header == request.end() ? std::nullopt : std::optional<std::string_view>(as_view(header->value())),
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
        recording_.set(Outcome::denied, "gateway \"" + context_.gateway + "\" is not configured");
        co_return Step::answer({});
    }
    const policy::ConnectorInstance* connector = gateway->connector_for_host(target.host);
    session_.set_scope(gateway->name, connector ? connector->name : "", connector ? connector->def->name : "");
    record_.connector = connector ? connector->name : "";

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
    recording_.set(stage::outcome_of(decision.label), decision.reason);
    const policy::Action* deciding = nullptr;
    if (decision.deciding_action < evaluation.actions.size()) {
        deciding = &evaluation.actions[decision.deciding_action];
        record_.action = deciding->type;
        credential_format_ = deciding->credential_format;
    } else if (connector == nullptr) {
        record_.action = "http.unknown";  // a host no connector serves (forwarded only where not enforced)
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
    const Step step = co_await forward(*gateway, connector, target.host, target.port);
    co_return step;
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
    held.connector = record_.connector;
    held.action = record_.action;
    if (action != nullptr) {
        held.risk = std::string(policy::to_string(action->risk));
        held.parameters = action->parameters.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    held.reason = record_.reason;
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
        recording_.set(Outcome::approval_timeout, "no answer within " + std::to_string(timeout.count()) + " s");
        co_return Step::answer({http::status::request_timeout});
    }
    if (!answer->approved) {
        recording_.set(Outcome::denied, session_.killed()
                                            ? "kill switch active"
                                            : "denied by a human" + (answer->note.empty() ? "" : ": " + answer->note));
        Local local;
        if (session_.killed()) local.headers.emplace_back("X-TameFlare-Kill-Switch", "active");
        co_return Step::answer(std::move(local), keep_alive && !session_.killed());
    }
    recording_.set(Outcome::approved, answer->note.empty() ? "approved" : "approved: " + answer->note);
    co_return std::nullopt;
}

// The connection's upstream for `host`: the one it has when it is still
// open, else a new one through the dialer. The failure's response, if any.
template <class Stream>
net::awaitable<std::optional<typename Exchange<Stream>::Local>> Exchange<Stream>::connect_upstream(
    const std::string& host, std::uint16_t port, const std::vector<IpAddress>& addresses) {
    if (upstream_ && upstream_host_ == host && upstream_port_ == port &&
        beast::get_lowest_layer(*upstream_).socket().is_open()) {
        co_return std::nullopt;
    }
    const auto drop = [this] {
        error_code ignored;
        beast::get_lowest_layer(*upstream_).socket().close(ignored);
        session_.upstream_socket() = nullptr;
        upstream_.reset();
    };
    if (upstream_) drop();
    const auto executor = client_.get_executor();
    if constexpr (kIsTls<Stream>) {
        upstream_.emplace(beast::tcp_stream(executor), impl_.client_tls);
    } else {
        upstream_.emplace(executor);
    }
    upstream_buffer_.clear();
    auto& lowest = beast::get_lowest_layer(*upstream_);
    session_.upstream_socket() = &lowest.socket();
    const Dialer dialer(impl_);
    if (const auto error = co_await dialer.connect(lowest, addresses, port)) {
        recording_.set_reason("cannot connect to " + host + " port " + std::to_string(port) + ": " + error.message());
        co_return Local{http::status::bad_gateway, "upstream_unreachable", "check that the upstream is up"};
    }
    if constexpr (kIsTls<Stream>) {
        if (auto failure = co_await dialer.handshake(*upstream_, host); !failure.empty()) {
            recording_.set(Outcome::error, std::move(failure));
            drop();
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
    record_.overhead = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - recording_.started());
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
        response.set("X-TameFlare-Decision", std::string(recording_.decision()));
        response.set("X-TameFlare-Gateway", context_.gateway);
        response.set("X-TameFlare-Connector", record_.connector);
        response.set("X-TameFlare-Action", record_.action);
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

// Upstream: the agreed destination, the credential, the record made durable
// (overlapping the connect), the body out and the response back.
template <class Stream>
net::awaitable<typename Exchange<Stream>::Step> Exchange<Stream>::forward(const policy::Gateway& gateway,
                                                                          const policy::ConnectorInstance* connector,
                                                                          const std::string& host, std::uint16_t port) {
    auto& request = parser_->get();
    const bool keep_alive = request.keep_alive();
    const bool drained = parser_->is_done();

    const Dialer dialer(impl_);
    auto agreed = co_await dialer.agree(host, context_.destination);
    if (auto* refusal = std::get_if<stage::DestinationRefusal>(&agreed)) {
        recording_.set(Outcome::denied, std::move(refusal->reason));
        co_return Step::answer({}, keep_alive && drained && refusal->keep_connection);
    }
    const auto& addresses = std::get<std::vector<IpAddress>>(agreed);

    // Credentials: the agent's own are removed, the vault's put in; hop-by-hop
    // headers stay here (upstream_headers.h).
    stage::UpstreamHeaders how{std::nullopt, parser_->upgrade(), keep_alive, sent_continue_, record_.request_id};
    if (auto missing = put_credential(gateway, connector, how)) {
        co_return Step::answer(std::move(*missing), keep_alive && drained);
    }
    stage::rewrite_upstream_headers(request.base(), how);
    if (how.credential) OPENSSL_cleanse(how.credential->second.data(), how.credential->second.size());

    // The record is durable before a byte goes upstream; the write overlaps
    // the connect.
    session_.start_commit(recording_.durable());
    if (auto failure = co_await connect_upstream(host, port, addresses)) {
        co_return Step::answer(std::move(*failure), keep_alive && drained);
    }
    if (const auto unlogged = co_await session_.await_commit(); !unlogged.empty()) {
        recording_.set(Outcome::error, "not forwarded: the traffic log cannot record it (" + unlogged + ")");
        co_return Step::answer({http::status::service_unavailable, "store_unavailable",
                                "tameflared cannot write its traffic log (disk full?) and forwards nothing it cannot "
                                "record; see journalctl -u tameflared"});
    }
    record_.forwarded = true;
    const bool head_request = request.method() == http::verb::head;
    std::string failure;
    try {
        record_.request_bytes = co_await stream_request_body();
        const bool stays = co_await relay_response(head_request, keep_alive);
        co_return Step::forwarded(stays);
    } catch (const boost::system::system_error& error) {
        failure = error.code().message();
    }
    if (record_.status != 0 || session_.killed()) co_return Step::close();
    recording_.set(Outcome::error, "upstream " + host + ": " + failure);
    co_return Step::answer({http::status::bad_gateway, "upstream_failed", ""});
}

// The vault's credential for the connector, spelled as the deciding route
// (or the connector) says, into `how`; the response when the vault lacks it.
template <class Stream>
std::optional<typename Exchange<Stream>::Local> Exchange<Stream>::put_credential(
    const policy::Gateway& gateway, const policy::ConnectorInstance* connector, stage::UpstreamHeaders& how) {
    if (connector == nullptr || connector->credential.empty()) return std::nullopt;
    std::optional<std::string> secret;
    if (impl_.services.credentials != nullptr) secret = impl_.services.credentials->credential(connector->credential);
    if (!secret) {
        recording_.set(Outcome::error, "the vault has no credential \"" + connector->credential +
                                           "\" for connector \"" + connector->name + "\" of gateway \"" + gateway.name +
                                           "\"");
        return Local{http::status::bad_gateway, "credential_missing", "tf vault set " + connector->credential};
    }
    std::string& value = *secret;
    // The route's own spelling first (github's git endpoints take HTTP Basic), else the connector's.
    how.credential.emplace(
        connector->credential_format.header,
        render_credential(credential_format_.empty() ? connector->credential_format.format : credential_format_,
                          value));
    OPENSSL_cleanse(value.data(), value.size());
    return std::nullopt;
}

// The two kinds of client stream a request arrives on.
template class Exchange<beast::tcp_stream>;
template class Exchange<TlsStream>;

}  // namespace tameflare::proxy::detail
