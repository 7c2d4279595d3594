// The REST server's insides, shared by its files and by nothing else:
// api_server.cpp (the socket, bound or adopted, and the server's lifetime),
// connection.cpp (accepting, one connection's read-dispatch-write loop,
// refusals), dispatch.cpp (each route onto Control, /metrics included) and
// event_stream.cpp (Server-Sent Events at /v1/events). Routes, targets,
// bodies and the error document are requests.h. Not a public header:
// include daemon/api/api_server.h.
#pragma once

#include "daemon/api/api_server.h"

#include "common/text.h"
#include "daemon/api/requests.h"

#include "daemon/control/control.h"

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::api {

namespace detail {

namespace net = boost::asio;
namespace beast = boost::beast;
using local = net::local::stream_protocol;
using boost::system::error_code;
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

struct Connection {
    explicit Connection(local::socket socket) : stream(std::move(socket)) {}
    Stream stream;
    // The event stream's wake-up timer while it waits (io thread only), so
    // that stop() can end the wait.
    net::steady_timer* wake = nullptr;
    std::list<std::shared_ptr<Connection>>::iterator self;
};

// What a publisher's thread hands to one event stream (event_stream.cpp).
struct EventQueue;

}  // namespace detail

struct ApiServer::Impl {
    Impl(ApiOptions options_in, control::Control& control_in) : options(std::move(options_in)), control(control_in) {}

    detail::net::awaitable<void> accept_loop();
    detail::net::awaitable<void> serve(std::shared_ptr<detail::Connection> connection);
    detail::net::awaitable<void> session(detail::Connection& connection);
    detail::net::awaitable<void> stream_events(detail::Connection& connection, const Caller& caller, control::Role role,
                                               std::set<std::string> types, unsigned version);
    detail::net::awaitable<void> linger(detail::Connection& connection);
    detail::net::awaitable<void> watch_close(std::shared_ptr<detail::Connection> connection,
                                             std::shared_ptr<detail::EventQueue> queue);
    detail::net::awaitable<bool> write(detail::Connection& connection, Reply reply, unsigned version, bool keep_alive);
    Reply dispatch(Op op, const std::vector<std::string>& params, const Query& query, const detail::Request& request,
                   const Caller& caller);
    void refuse(detail::local::socket& socket) const;
    void bind();
    void grant_groups() const;
    void close_everything();

    ApiOptions options;
    control::Control& control;
    detail::net::io_context io{1};
    detail::local::acceptor acceptor{io};
    std::filesystem::path path;
    std::thread thread;
    std::optional<detail::net::executor_work_guard<detail::net::io_context::executor_type>> work;
    std::list<std::shared_ptr<detail::Connection>> connections;  // io thread only
    bool started = false;
    bool adopted = false;   // the socket came from systemd
    bool removed = false;   // its file, by stop()
    bool stopping = false;  // io thread only
};

}  // namespace tameflare::api
