// One connection to the REST socket: accepted (or refused over the limit),
// then requests read, dispatched and answered in turn until it closes or
// hands over to an event stream.
#include "daemon/api/api_internal.h"

#include "common/log.h"
#include "netns/cgroup.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <string_view>

namespace tameflare::api {

using namespace detail;

namespace {

constexpr std::array<std::string_view, 8> kEventTypes{
    "approval.requested", "approval.resolved", "kill_switch.changed", "agent.started",
    "agent.exited",       "config.reloaded",   "enforcement.changed", "traffic"};

Caller caller_of(int socket) {
    auto caller = peer_credentials(socket);
    caller.via = "rest";
    // "" (a caller that is gone, its pid perhaps reused) counts as an agent.
    caller.cgroup = netns::process_cgroup(caller.pid, caller.pidfd());
    return caller;
}

}  // namespace

// Over the limit: a one-line answer if the socket takes it at once, then closed.
void ApiServer::Impl::refuse(local::socket& socket) const {
    static const std::string kBody = dump(json{{"error", "unavailable"},
                                               {"message", "too many connections to the control socket"},
                                               {"hint", "close idle clients and retry"}});
    const std::string response =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: " +
        std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
    (void)::send(socket.native_handle(), response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    error_code ignored;
    socket.close(ignored);
    log(LogLevel::debug, "REST connection refused: too many connections");
}

net::awaitable<void> ApiServer::Impl::accept_loop() {
    for (;;) {
        local::socket socket(io);
        error_code error;
        auto accept = acceptor.async_accept(socket, net::redirect_error(kToken, error));
        co_await std::move(accept);
        if (error == net::error::operation_aborted || !acceptor.is_open() || stopping) co_return;
        if (error) {  // EMFILE and the like: back off instead of spinning
            log(LogLevel::warning, "REST accept failed: " + error.message());
            net::steady_timer pause(io, std::chrono::milliseconds(100));
            auto wait = pause.async_wait(net::redirect_error(kToken, error));
            co_await std::move(wait);
            continue;
        }
        if (connections.size() >= options.max_connections) {
            refuse(socket);
            continue;
        }
        auto connection = std::make_shared<Connection>(std::move(socket));
        connections.push_front(connection);
        connection->self = connections.begin();
        net::co_spawn(io, serve(connection), net::detached);
    }
}

net::awaitable<void> ApiServer::Impl::serve(std::shared_ptr<Connection> connection) {
    std::string failure;
    try {
        co_await session(*connection);
    } catch (const std::exception& error) {
        failure = error.what();
    }
    if (!failure.empty()) log(LogLevel::debug, "REST connection ended: " + failure);
    error_code ignored;
    connection->stream.socket().shutdown(local::socket::shutdown_both, ignored);
    connection->stream.close();
    connections.erase(connection->self);
}

net::awaitable<bool> ApiServer::Impl::write(Connection& connection, Reply reply, unsigned version, bool keep_alive) {
    http::response<http::string_body> response{reply.status, version};
    response.set(http::field::content_type, reply.content_type);
    response.set(http::field::cache_control, "no-store");
    if (!reply.allow.empty()) response.set(http::field::allow, reply.allow);
    response.body() = std::move(reply.body);
    response.keep_alive(keep_alive);
    response.prepare_payload();
    connection.stream.expires_after(kWriteTimeout);
    error_code error;
    auto send = http::async_write(connection.stream, response, net::redirect_error(kToken, error));
    co_await std::move(send);
    co_return !error;
}

// One piece over 100 lines: one connection's read-dispatch-write loop with its timeouts and the event-stream hand-off;
// issue 23 item 3 moves routing out. NOLINTNEXTLINE(readability-function-size)
net::awaitable<void> ApiServer::Impl::session(Connection& connection) {
    // The kernel's word on who connected, once: it does not change.
    const Caller caller = caller_of(connection.stream.socket().native_handle());
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(kHeaderLimit);
        parser.body_limit(options.max_body_bytes);  // never boost::none: broken in Beast 1.74
        error_code error;
        connection.stream.expires_after(kRequestTimeout);
        auto read_head = http::async_read_header(connection.stream, buffer, parser, net::redirect_error(kToken, error));
        co_await std::move(read_head);
        if (!error && !parser.is_done()) {
            const auto expect = parser.get()[http::field::expect];
            if (beast::iequals(expect, "100-continue")) {
                http::response<http::empty_body> proceed{http::status::continue_, parser.get().version()};
                auto send = http::async_write(connection.stream, proceed, net::redirect_error(kToken, error));
                co_await std::move(send);
                if (error) co_return;
            }
            auto read_body = http::async_read(connection.stream, buffer, parser, net::redirect_error(kToken, error));
            co_await std::move(read_body);
        }
        if (error) {
            // A client that left (or idled out) gets nothing; one that sent
            // something unreadable gets a reason, then the connection ends.
            std::optional<Reply> reply;
            if (error == http::error::body_limit) {
                reply =
                    error_reply(http::status::payload_too_large, "too_large",
                                "the request body is over " + std::to_string(options.max_body_bytes) + " bytes", "");
            } else if (error == http::error::header_limit) {
                reply = error_reply(http::status::request_header_fields_too_large, "too_large",
                                    "the request head is over " + std::to_string(kHeaderLimit) + " bytes", "");
            } else if (error.category() == http::make_error_code(http::error::bad_target).category() &&
                       error != http::error::end_of_stream && error != http::error::partial_message) {
                reply =
                    error_reply(http::status::bad_request, "bad_request", "malformed HTTP request: " + error.message(),
                                "speak HTTP/1.1, e.g. curl --unix-socket");
            }
            if (reply) {
                log(LogLevel::debug, "REST request refused: " + error.message());
                auto send = write(connection, std::move(*reply), 11, false);
                const bool sent = co_await std::move(send);
                if (sent && error == http::error::body_limit) {
                    auto drain = linger(connection);
                    co_await std::move(drain);
                }
            }
            co_return;
        }
        const Request& request = parser.get();
        const unsigned version = request.version();
        const bool keep_alive = request.keep_alive();

        Reply reply;
        std::optional<Op> op;
        std::vector<std::string> params;
        Query query;
        // Audit records and approvals name what was called, not only who.
        Caller call = caller;
        try {
            const auto target = parse_target(as_view(request.target()));
            if (!target) {
                throw ApiError{http::status::bad_request, "bad_request", "malformed request target or query string",
                               "percent-encode names in paths and queries"};
            }
            query = target->query;
            call.method = std::string(as_view(request.method_string())) + " " + std::string(target->path);
            const auto segments = split_path(target->path);
            std::string allow;
            for (const auto& route : kRoutes) {
                auto raw = fit(route.path, segments);
                if (!raw) continue;
                if (route.method != request.method()) {
                    const std::string method(as_view(http::to_string(route.method)));
                    if (allow.find(method) == std::string::npos) allow += (allow.empty() ? "" : ", ") + method;
                    continue;
                }
                op = route.op;
                for (const auto value : *raw) {
                    auto decoded = decode_name(value, false);
                    if (!decoded || decoded->empty()) {
                        throw ApiError{http::status::bad_request, "bad_request", "malformed path parameter",
                                       "percent-encode names in paths"};
                    }
                    params.push_back(std::move(*decoded));
                }
                break;
            }
            if (!op && !allow.empty()) {
                reply = error_reply(http::status::method_not_allowed, "method_not_allowed",
                                    std::string(as_view(request.method_string())) + " is not allowed on this path",
                                    "allowed: " + allow);
                reply.allow = allow;
            } else if (!op) {
                reply = error_reply(http::status::not_found, "not_found", "no such route",
                                    "GET /v1/openapi.json lists the routes");
            }
        } catch (const ApiError& refusal) {
            op.reset();
            reply = error_reply(refusal.status, refusal.code, refusal.message, refusal.hint);
        }

        if (op == Op::events) {
            // Authorized as any call is; what each caller sees is filtered per event.
            std::optional<Role> role;
            std::set<std::string> types;
            try {
                role = control.authorize(call, Role::none);
                for (const auto& [name, value] : query) {
                    if (name != "types") throw bad_field(name, "is not a parameter of /v1/events", "types=a,b");
                    std::string_view rest = value;
                    while (!rest.empty()) {
                        const auto comma = rest.find(',');
                        const std::string type(rest.substr(0, comma));
                        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
                        if (type.empty()) continue;
                        if (std::find(kEventTypes.begin(), kEventTypes.end(), type) == kEventTypes.end()) {
                            throw bad_field("types", "names an unknown event type \"" + type + "\"",
                                            "types: approval.requested, approval.resolved, kill_switch.changed, "
                                            "agent.started, agent.exited, config.reloaded, enforcement.changed, "
                                            "traffic");
                        }
                        types.insert(type);
                    }
                }
            } catch (const ApiError& refusal) {
                role.reset();
                reply = error_reply(refusal.status, refusal.code, refusal.message, refusal.hint);
            } catch (const ControlError& refusal) {
                role.reset();
                if (refusal.kind() == ControlError::Kind::forbidden) {
                    log(LogLevel::debug, "REST call refused: " + std::string(refusal.what()),
                        {{"CALLER", call.describe()}});
                }
                reply = error_reply(status_of(refusal.kind()), refusal.code(), refusal.what(), refusal.hint());
            } catch (const std::exception& failure) {
                role.reset();
                log(LogLevel::error, std::string("REST call failed: ") + failure.what(), {{"CALLER", call.describe()}});
                reply = error_reply(http::status::internal_server_error, "internal", failure.what(),
                                    "the daemon's log has the details");
            }
            if (role) {
                auto events = stream_events(connection, call, *role, std::move(types), version);
                co_await std::move(events);
                co_return;
            }
        } else if (op) {
            reply = dispatch(*op, params, query, request, call);
        }
        auto send = write(connection, std::move(reply), version, keep_alive);
        const bool sent = co_await std::move(send);
        if (!sent || !keep_alive) co_return;
    }
}

// A client still sending a body that is refused would get a broken pipe
// instead of the answer: read and drop what it sends, for a while, first.
net::awaitable<void> ApiServer::Impl::linger(Connection& connection) {
    error_code error;
    connection.stream.socket().shutdown(local::socket::shutdown_send, error);
    connection.stream.expires_after(kLinger);
    std::array<char, 16384> discard{};
    for (std::size_t drained = 0; drained < kLingerBytes;) {
        auto read = connection.stream.async_read_some(net::buffer(discard), net::redirect_error(kToken, error));
        drained += co_await std::move(read);
        if (error) break;
    }
}

}  // namespace tameflare::api
