#include "daemon/api/api_server.h"

#include "daemon/api/requests.h"

#include "common/log.h"
#include "common/text.h"
#include "common/users.h"
#include "daemon/control/control.h"
#include "daemon/control/events.h"
#include "daemon/proxy/liveness.h"
#include "daemon/store/query.h"
#include "netns/cgroup.h"

#include <grp.h>
#include <sys/acl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <deque>
#include <fstream>
#include <list>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>

namespace tameflare::api {

// Generated from openapi.json by embed_openapi.cmake.
extern const char* const kOpenApiDocument;

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = net::local::stream_protocol;
using boost::system::error_code;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using control::ControlError;
using control::Role;
using Stream = beast::basic_stream<local>;
using Request = http::request<http::string_body>;

constexpr auto kToken = net::use_awaitable;
// Reading one request, from its first byte (or the end of the previous one)
// to its last; an idle keep-alive connection is closed after it.
constexpr std::chrono::seconds kRequestTimeout{60};
// Writing one response, or one batch of events to a stream.
constexpr std::chrono::seconds kWriteTimeout{60};
constexpr std::chrono::seconds kKeepAlive{15};
// After refusing a body as too large: how long, and how much of it, is read
// and dropped so that the client gets to read the refusal.
constexpr std::chrono::seconds kLinger{2};
constexpr std::size_t kLingerBytes = std::size_t{16} << 20;
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
// Events waiting for a stream client that does not read; past it the client
// is dropped rather than the daemon's memory growing.
constexpr std::size_t kMaxQueuedEvents = 1000;

constexpr std::array<std::string_view, 8> kEventTypes{
    "approval.requested", "approval.resolved", "kill_switch.changed", "agent.started",
    "agent.exited",       "config.reloaded",   "enforcement.changed", "traffic"};

// ---------------------------------------------------------------------------
// Callers

Caller caller_of(int socket) {
    auto caller = peer_credentials(socket);
    caller.via = "rest";
    // "" (a caller that is gone, its pid perhaps reused) counts as an agent.
    caller.cgroup = netns::process_cgroup(caller.pid, caller.pidfd());
    return caller;
}

bool visible_to(const control::Event& event, Role role, uid_t uid) {
    return static_cast<int>(role) >= event.visible_to || (event.owner_uid == uid && uid != static_cast<uid_t>(-1));
}

std::string sse_frame(const control::Event& event) {
    std::string frame = "id: " + std::to_string(event.id) + "\n";
    // The type is ours, but a newline in it would end the frame early.
    std::string type = event.type;
    std::replace(type.begin(), type.end(), '\n', ' ');
    frame += "event: " + type + "\n";
    frame += "data: " + event.data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
    return frame;
}

struct Connection {
    explicit Connection(local::socket socket) : stream(std::move(socket)) {}
    Stream stream;
    // The event stream's wake-up timer while it waits (io thread only), so
    // that stop() can end the wait.
    net::steady_timer* wake = nullptr;
    std::list<std::shared_ptr<Connection>>::iterator self;
};

// What a publisher's thread hands to one event stream.
struct EventQueue {
    std::mutex mutex;
    std::deque<control::Event> events;
    bool open = true;       // false once the stream ended: nothing is queued or posted after
    bool overflow = false;  // the client fell kMaxQueuedEvents behind
    bool notified = false;  // a wake-up is posted and not yet consumed
    bool client_gone = false;
    // io thread only, valid while open.
    net::steady_timer* wake = nullptr;
    Connection* connection = nullptr;
};

// An event for a stream's queue, on the publisher's thread: those the
// caller may see and asked for are queued and one wake-up is posted; a queue
// kMaxQueuedEvents behind ends its stream.
void enqueue(const std::shared_ptr<EventQueue>& queue, const control::Event& event, Role role, uid_t uid,
             const std::set<std::string>& types, const net::io_context::executor_type& executor) {
    if (!visible_to(event, role, uid)) return;
    if (!types.empty() && types.count(event.type) == 0) return;
    std::lock_guard lock(queue->mutex);
    if (!queue->open) return;
    if (queue->overflow) return;
    if (queue->events.size() >= kMaxQueuedEvents) {
        // The stream may sit in a write the client does not read: end it
        // now rather than when that write times out.
        queue->overflow = true;
        queue->events.clear();
        net::post(executor, [queue] {
            std::lock_guard inner(queue->mutex);
            if (!queue->open) return;
            if (queue->connection != nullptr) queue->connection->stream.cancel();
            if (queue->wake != nullptr) queue->wake->cancel();
        });
        return;
    }
    queue->events.push_back(event);
    if (queue->notified) return;
    queue->notified = true;
    net::post(executor, [queue] {
        std::lock_guard inner(queue->mutex);
        if (queue->open && queue->wake != nullptr) queue->wake->cancel();
    });
}

}  // namespace

// ---------------------------------------------------------------------------

struct ApiServer::Impl {
    Impl(ApiOptions options_in, control::Control& control_in) : options(std::move(options_in)), control(control_in) {}

    net::awaitable<void> accept_loop();
    net::awaitable<void> serve(std::shared_ptr<Connection> connection);
    net::awaitable<void> session(Connection& connection);
    net::awaitable<void> stream_events(Connection& connection, const Caller& caller, Role role,
                                       std::set<std::string> types, unsigned version);
    net::awaitable<void> linger(Connection& connection);
    net::awaitable<void> watch_close(std::shared_ptr<Connection> connection, std::shared_ptr<EventQueue> queue);
    net::awaitable<bool> write(Connection& connection, Reply reply, unsigned version, bool keep_alive);
    Reply dispatch(Op op, const std::vector<std::string>& params, const Query& query, const Request& request,
                   const Caller& caller);
    void refuse(local::socket& socket) const;
    void bind();
    void grant_groups() const;
    void close_everything();

    ApiOptions options;
    control::Control& control;
    net::io_context io{1};
    local::acceptor acceptor{io};
    std::filesystem::path path;
    std::thread thread;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
    std::list<std::shared_ptr<Connection>> connections;  // io thread only
    bool started = false;
    bool adopted = false;   // the socket came from systemd
    bool removed = false;   // its file, by stop()
    bool stopping = false;  // io thread only
};

void ApiServer::Impl::bind() {
    if (options.listening) {
        error_code error;
        acceptor.assign(local(), options.listening->get(), error);
        if (error) throw std::system_error(error, "adopting the REST socket");
        options.listening->release();  // the acceptor owns it now
        adopted = true;
        path = acceptor.local_endpoint(error).path();
        grant_groups();  // systemd set the mode and group (SocketMode=, SocketGroup=)
        return;
    }
    path = options.socket;
    if (path.native().size() >= sizeof(sockaddr_un::sun_path)) {
        throw std::system_error(std::make_error_code(std::errc::filename_too_long),
                                "the REST socket path " + path.string() + " is too long for a unix socket");
    }
    std::error_code fs_error;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), fs_error);
    struct stat existing {};
    if (::lstat(path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode)) {
            throw std::system_error(std::make_error_code(std::errc::file_exists),
                                    path.string() + " exists and is not a socket; not replacing it");
        }
        // A live server behind it keeps it: two daemons must not share one.
        local::socket probe(io);
        error_code error;
        probe.connect(local::endpoint(path.string()), error);
        if (!error) {
            throw std::system_error(std::make_error_code(std::errc::address_in_use),
                                    "another server is listening on " + path.string());
        }
        ::unlink(path.c_str());
    }
    acceptor.open(local());
    acceptor.bind(local::endpoint(path.string()));
    acceptor.listen(net::socket_base::max_listen_connections);
    if (::chmod(path.c_str(), options.mode) != 0) {
        throw std::system_error(errno, std::generic_category(), "chmod " + path.string());
    }
    if (!options.group.empty()) {
        const auto gid = group_id(options.group);
        if (!gid) {
            log(LogLevel::warning, "the REST socket's group does not exist; only root (and root's group) may connect",
                {{"API_SOCKET", path.string()},
                 {"GROUP", options.group},
                 {"HINT", "create the group (systemd-sysusers) or set api.socket_group"}});
        } else if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
            throw std::system_error(errno, std::generic_category(), "chown " + path.string() + " to " + options.group);
        }
    }
    grant_groups();
}

// connect(2) on a unix socket needs write permission on it: one ACL entry
// (rw) per role group, so that each role's members reach the daemon (which
// then authorizes every call by the caller's groups itself).
void ApiServer::Impl::grant_groups() const {
    std::vector<gid_t> gids;
    for (const auto& group : options.also_groups) {
        if (const auto gid = group.empty() ? std::nullopt : group_id(group)) gids.push_back(*gid);
    }
    if (gids.empty()) return;
    // acl_create_entry may move the ACL: the holder frees whichever it is at the end.
    struct Acl {
        acl_t acl;
        explicit Acl(acl_t given) : acl(given) {}
        Acl(const Acl&) = delete;
        Acl& operator=(const Acl&) = delete;
        ~Acl() {
            if (acl != nullptr) ::acl_free(acl);
        }
    } held{::acl_get_file(path.c_str(), ACL_TYPE_ACCESS)};
    bool ok = held.acl != nullptr;
    acl_t& raw = held.acl;
    for (auto& gid : gids) {
        acl_entry_t entry = nullptr;
        acl_permset_t permissions = nullptr;
        ok = ok && ::acl_create_entry(&raw, &entry) == 0 && ::acl_set_tag_type(entry, ACL_GROUP) == 0 &&
             ::acl_set_qualifier(entry, &gid) == 0 && ::acl_get_permset(entry, &permissions) == 0 &&
             ::acl_clear_perms(permissions) == 0 && ::acl_add_perm(permissions, ACL_READ) == 0 &&
             ::acl_add_perm(permissions, ACL_WRITE) == 0;
    }
    ok = ok && ::acl_calc_mask(&raw) == 0 && ::acl_set_file(path.c_str(), ACL_TYPE_ACCESS, raw) == 0;
    if (!ok) {
        log(LogLevel::warning,
            std::string("cannot give the role groups access to the REST socket: ") + std::strerror(errno),
            {{"API_SOCKET", path.string()},
             {"HINT", "its file system needs POSIX ACLs; meanwhile add role members to the socket's group"}});
    }
}

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
            const auto target = parse_target(view(request.target()));
            if (!target) {
                throw ApiError{http::status::bad_request, "bad_request", "malformed request target or query string",
                               "percent-encode names in paths and queries"};
            }
            query = target->query;
            call.method = std::string(view(request.method_string())) + " " + std::string(target->path);
            const auto segments = split_path(target->path);
            std::string allow;
            for (const auto& route : kRoutes) {
                auto raw = fit(route.path, segments);
                if (!raw) continue;
                if (route.method != request.method()) {
                    const std::string method(view(http::to_string(route.method)));
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
                                    std::string(view(request.method_string())) + " is not allowed on this path",
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

// One piece over 100 lines: the route table: one case per REST operation onto Control; issue 23 item 3 derives it from
// the typed control model. NOLINTNEXTLINE(readability-function-size)
Reply ApiServer::Impl::dispatch(Op op, const std::vector<std::string>& params, const Query& query,
                                const Request& request, const Caller& caller) {
    const auto ok = [](const json& body) { return Reply{http::status::ok, dump(body), "application/json", ""}; };
    const auto param = [&](std::size_t i) -> const std::string& { return params.at(i); };
    try {
        switch (op) {
            case Op::status: return ok(control.status(caller));
            case Op::gateways: return ok(control.gateways(caller));
            case Op::gateway: return ok(control.gateway(caller, param(0)));
            case Op::set_enforcement: {
                const auto body = parse_object(request.body());
                const auto level = string_field(body, "level", true, "monitor, soft or full");
                return ok(control.set_enforcement(caller, param(0), *level));
            }
            case Op::reload: {
                auto result = control.reload(caller);
                // A refused configuration is the caller's to fix: 400 with the errors.
                if (result.is_object() && result.value("reloaded", true) == false) {
                    json extra{{"errors", result.value("errors", json::array())}};
                    return error_reply(http::status::bad_request, "config_invalid",
                                       "the configuration on disk is invalid; the running one stays in force",
                                       "fix the errors listed, then reload again", extra);
                }
                return ok(result);
            }
            case Op::check_config: return ok(control.check_config(caller));
            case Op::policy_test: {
                const auto body = parse_object(request.body());
                json test = json::object();
                test["gateway"] = *string_field(body, "gateway", true);
                test["method"] = string_field(body, "method", false).value_or("GET");
                test["url"] = *string_field(body, "url", true, "an absolute URL, e.g. https://api.github.com/user");
                test["body"] = string_field(body, "body", false).value_or("");
                if (auto type = string_field(body, "content_type", false)) test["content_type"] = std::move(*type);
                json headers = json::object();
                if (const auto it = body.find("headers"); it != body.end() && !it->is_null()) {
                    if (!it->is_object()) throw bad_field("headers", "must be an object of strings");
                    for (const auto& [name, value] : it->items()) {
                        if (!value.is_string()) throw bad_field("headers", "must be an object of strings");
                        headers[name] = value;
                    }
                }
                test["headers"] = std::move(headers);
                return ok(control.test_request(caller, test));
            }
            case Op::agents: return ok(control.agents(caller));
            case Op::agent: return ok(control.agent(caller, param(0)));
            case Op::stop_agent: return ok(control.stop_agent(caller, param(0)));
            case Op::approvals: return ok(control.approvals(caller));
            case Op::approval: return ok(control.approval(caller, param(0)));
            case Op::approve:
            case Op::deny: {
                const auto body = parse_object(request.body());
                const auto note = string_field(body, "note", false).value_or("");
                return ok(control.answer(caller, param(0), op == Op::approve, note));
            }
            case Op::kill_switch: return ok(control.kill_switch(caller));
            case Op::set_kill_switch: {
                const auto body = parse_object(request.body());
                const bool active = *bool_field(body, "active", true);
                const auto scope =
                    string_field(body, "scope", false, "all, gateway:NAME or connector:NAME").value_or("all");
                const auto reason = string_field(body, "reason", false).value_or("");
                return ok(control.set_kill_switch(caller, active, scope, reason));
            }
            case Op::traffic: {
                const auto logs = log_query(query, false);
                return log_reply(logs, "rows", [&](store::Format format, std::ostream& out) {
                    store::TrafficWriter writer(out, format);
                    writer.header();
                    control.traffic(caller, logs.filter, [&](const store::TrafficRow& row) { writer.write(row); });
                });
            }
            case Op::audit: {
                const auto logs = log_query(query, true);
                return log_reply(logs, "records", [&](store::Format format, std::ostream& out) {
                    store::AuditWriter writer(out, format);
                    writer.header();
                    control.audit(caller, logs.filter, [&](const store::AuditRecord& record) { writer.write(record); });
                });
            }
            case Op::audit_verify: return ok(control.verify_audit(caller));
            case Op::vault: return ok(control.vault(caller));
            case Op::vault_set: {
                const auto body = parse_object(request.body());
                const auto value = string_field(body, "value", true, "the secret, as a JSON string");
                const auto connector = string_field(body, "connector", false).value_or("");
                return ok(control.vault_set(caller, param(0), connector, *value));
            }
            case Op::vault_remove: return ok(control.vault_remove(caller, param(0)));
            case Op::vault_rotate: return ok(control.vault_rotate(caller));
            case Op::openapi:
                control.authorize(caller, Role::none);
                return {http::status::ok, openapi(), "application/json", ""};
            case Op::metrics: return {http::status::ok, control.metrics(caller), "text/plain; version=0.0.4", ""};
            case Op::events: break;  // streamed by session()
        }
        throw std::logic_error("unrouted operation");
    } catch (const ApiError& refusal) {
        return error_reply(refusal.status, refusal.code, refusal.message, refusal.hint);
    } catch (const ControlError& refusal) {
        if (refusal.kind() == ControlError::Kind::forbidden) {
            log(LogLevel::debug, "REST call refused: " + std::string(refusal.what()), {{"CALLER", caller.describe()}});
        }
        return error_reply(status_of(refusal.kind()), refusal.code(), refusal.what(), refusal.hint());
    } catch (const json::exception& failure) {
        // A value of the wrong type that reached Control (json's type_error).
        return error_reply(http::status::bad_request, "bad_field",
                           std::string("a field has the wrong type: ") + failure.what(),
                           "see GET /v1/openapi.json for the request's schema");
    } catch (const std::exception& failure) {
        log(LogLevel::error, std::string("REST call failed: ") + failure.what(), {{"CALLER", caller.describe()}});
        return error_reply(http::status::internal_server_error, "internal", failure.what(),
                           "the daemon's log has the details");
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

// Reads (and discards) whatever the stream's client sends, to learn at once
// when it goes away instead of at the next keep-alive.
net::awaitable<void> ApiServer::Impl::watch_close(std::shared_ptr<Connection> connection,
                                                  std::shared_ptr<EventQueue> queue) {
    std::array<char, 512> discard{};
    for (;;) {
        error_code error;
        // No deadline for the read (the stream's writes keep theirs): a
        // pending read keeps its expiry even when a write sets a new one.
        connection->stream.expires_never();
        auto read = connection->stream.async_read_some(net::buffer(discard), net::redirect_error(kToken, error));
        co_await std::move(read);
        if (error) break;
    }
    std::lock_guard lock(queue->mutex);
    if (!queue->open) co_return;
    queue->client_gone = true;
    if (queue->wake != nullptr) queue->wake->cancel();
}

net::awaitable<void> ApiServer::Impl::stream_events(Connection& connection, const Caller& caller, Role role,
                                                    std::set<std::string> types, unsigned version) {
    net::steady_timer wake(io);
    auto queue = std::make_shared<EventQueue>();
    queue->wake = &wake;
    queue->connection = &connection;
    connection.wake = &wake;
    auto& hub = control.events();
    const uid_t uid = caller.uid;
    auto executor = io.get_executor();
    // Runs on the publisher's thread: filter, queue, and post one wake-up.
    const auto subscription = hub.subscribe([queue, role, uid, types, executor](const control::Event& event) {
        enqueue(queue, event, role, uid, types, executor);
    });
    // Whichever way this coroutine ends (even destroyed with the io_context),
    // nothing is queued or posted for it afterwards.
    struct Unsubscribe {
        control::EventHub& hub;
        std::uint64_t subscription;
        std::shared_ptr<EventQueue> queue;
        Connection& connection;
        ~Unsubscribe() {
            {
                std::lock_guard lock(queue->mutex);
                queue->open = false;
                queue->wake = nullptr;
                queue->connection = nullptr;
            }
            connection.wake = nullptr;
            hub.unsubscribe(subscription);
        }
    } unsubscribe{hub, subscription, queue, connection};

    http::response<http::empty_body> head{http::status::ok, version};
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-store");
    head.chunked(true);
    http::response_serializer<http::empty_body> serializer{head};
    error_code error;
    connection.stream.expires_after(kWriteTimeout);
    auto send_head = http::async_write_header(connection.stream, serializer, net::redirect_error(kToken, error));
    co_await std::move(send_head);
    if (error) co_return;
    net::co_spawn(io, watch_close(*connection.self, queue), net::detached);

    std::string pending = ": connected\n\n";
    auto next_keep_alive = std::chrono::steady_clock::now() + kKeepAlive;
    while (!stopping) {
        if (pending.empty()) {
            bool gone = false;
            std::deque<control::Event> batch;
            {
                std::lock_guard lock(queue->mutex);
                batch.swap(queue->events);
                gone = queue->client_gone || queue->overflow;
                queue->notified = false;
            }
            if (gone) break;
            for (const auto& event : batch) pending += sse_frame(event);
        }
        if (pending.empty() && std::chrono::steady_clock::now() >= next_keep_alive) pending = ": keep-alive\n\n";
        if (pending.empty()) {
            wake.expires_at(next_keep_alive);
            auto wait = wake.async_wait(net::redirect_error(kToken, error));
            co_await std::move(wait);  // cancelled: events, the client left, or stop()
            continue;
        }
        // A chunk of frames; its write is bounded like any other.
        connection.stream.expires_after(kWriteTimeout);
        auto send = net::async_write(connection.stream, http::make_chunk(net::buffer(pending)),
                                     net::redirect_error(kToken, error));
        co_await std::move(send);
        if (error) break;
        pending.clear();
        next_keep_alive = std::chrono::steady_clock::now() + kKeepAlive;
    }
    std::lock_guard lock(queue->mutex);
    if (queue->overflow) {
        log(LogLevel::notice, "event stream dropped: the client fell too far behind",
            {{"CALLER", caller.describe()}, {"QUEUED_EVENTS", std::to_string(kMaxQueuedEvents)}});
    }
}

void ApiServer::Impl::close_everything() {
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    for (auto& connection : connections) {
        connection->stream.socket().shutdown(local::socket::shutdown_both, ignored);
        connection->stream.close();
        if (connection->wake != nullptr) connection->wake->cancel();
    }
}

// ---------------------------------------------------------------------------

ApiServer::ApiServer(ApiOptions options, control::Control& control)
    : impl_(std::make_unique<Impl>(std::move(options), control)) {
    impl_->bind();
}

ApiServer::~ApiServer() {
    stop();
}

bool ApiServer::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->thread.joinable()) return true;
    boost::asio::io_context* loop = &impl_->io;
    return proxy::loops_answer(std::span(&loop, 1), timeout);
}

void ApiServer::start() {
    if (impl_->started) return;
    if (impl_->stopping) throw std::logic_error("a stopped REST server cannot be started again");
    impl_->started = true;
    impl_->work.emplace(impl_->io.get_executor());
    net::co_spawn(impl_->io, impl_->accept_loop(), net::detached);
    impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

void ApiServer::stop() {
    if (impl_->started) {
        impl_->started = false;
        // Every connection is closed on the io thread; their coroutines then
        // end on their own, and run() returns once nothing is left.
        net::post(impl_->io, [impl = impl_.get()] { impl->close_everything(); });
        impl_->work.reset();
        impl_->thread.join();
    } else {
        error_code ignored;
        impl_->acceptor.close(ignored);
        impl_->stopping = true;
    }
    // Ours to remove when we bound it; systemd's when it made it.
    if (!impl_->adopted && !impl_->removed) {
        impl_->removed = true;
        ::unlink(impl_->path.c_str());
    }
}

const std::filesystem::path& ApiServer::path() const {
    return impl_->path;
}

const std::string& ApiServer::openapi() {
    static const std::string document(kOpenApiDocument);
    return document;
}

std::vector<ApiServer::Route> ApiServer::routes() {
    std::vector<Route> out;
    out.reserve(kRoutes.size());
    for (const auto& route : kRoutes) {
        out.push_back({std::string(view(http::to_string(route.method))), std::string(route.path)});
    }
    return out;
}

}  // namespace tameflare::api
