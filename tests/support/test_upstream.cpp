#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "tests/support/test_upstream.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>

namespace tameflare::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using Request = http::request<http::string_body>;

namespace {

constexpr std::uint64_t kBodyLimit = 64u << 20;
constexpr std::uint32_t kHeaderLimit = 1u << 20;
constexpr std::size_t kEchoedBodyLimit = 4096;
constexpr auto kCloseTimeout = std::chrono::seconds(2);

auto with(error_code& ec) {
    return asio::redirect_error(asio::use_awaitable, ec);
}

// Beast in Boost 1.74 uses boost::string_view.
std::string_view view(beast::string_view text) {
    return {text.data(), text.size()};
}

// One accepted socket, and a timer for the routes that wait.
struct Connection {
    Connection(tcp::socket accepted, std::size_t number)
        : socket(std::move(accepted)), timer(socket.get_executor()), id(number) {}
    tcp::socket socket;
    asio::steady_timer timer;
    std::size_t id;
};

// The path of an origin- or absolute-form target and its query parameters.
struct Target {
    std::string path;
    std::map<std::string, std::string, std::less<>> query;

    explicit Target(std::string_view target) {
        if (const auto scheme = target.find("://"); scheme != std::string_view::npos && target.front() != '/') {
            const auto slash = target.find('/', scheme + 3);
            target = slash == std::string_view::npos ? "/" : target.substr(slash);
        }
        const auto mark = target.find('?');
        path = target.substr(0, mark);
        std::string_view rest = mark == std::string_view::npos ? "" : target.substr(mark + 1);
        while (!rest.empty()) {
            const auto amp = rest.find('&');
            const std::string_view pair = rest.substr(0, amp);
            const auto equals = pair.find('=');
            query.emplace(pair.substr(0, equals), equals == std::string_view::npos ? "" : pair.substr(equals + 1));
            rest = amp == std::string_view::npos ? "" : rest.substr(amp + 1);
        }
    }
    static long number(std::string_view text, long fallback) {
        long value = fallback;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        return error == std::errc() && end == text.data() + text.size() ? value : fallback;
    }
    [[nodiscard]] long number(std::string_view name, long fallback, long most) const {
        const auto it = query.find(name);
        return std::clamp(it == query.end() ? fallback : number(it->second, fallback), 0L, most);
    }
};

std::string echo_json(const Request& request) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& field : request) {
        std::string name(field.name_string());
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        headers[name] = std::string(field.value());
    }
    const std::string& body = request.body();
    const nlohmann::json echo = {{"method", std::string(request.method_string())},
                                 {"target", std::string(request.target())},
                                 {"headers", headers},
                                 {"body_bytes", body.size()},
                                 {"body", body.size() < kEchoedBodyLimit ? body : ""}};
    return echo.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// ALPN: http/1.1 when the client offers it, otherwise no protocol at all.
int select_http11(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* offered,
                  unsigned int offered_length, void*) {
    static const unsigned char kHttp11[] = "\x08http/1.1";
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, kHttp11, sizeof kHttp11 - 1, offered, offered_length) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

}  // namespace

struct TestUpstream::Impl {
    explicit Impl(Options chosen);

    Options options;
    asio::io_context io;
    tcp::acceptor acceptor{io};
    std::optional<asio::ssl::context> tls;
    unsigned short port = 0;
    std::thread thread;

    // Only touched on the server thread.
    bool stopping = false;
    std::size_t connections = 0;
    std::set<std::shared_ptr<Connection>> live;

    mutable std::mutex mutex;
    mutable std::condition_variable changed;
    std::vector<SeenRequest> seen;
    std::size_t accepted = 0;

    void stop();
    void record(SeenRequest request);
    awaitable<void> accept_loop();
    awaitable<void> serve(std::shared_ptr<Connection> connection);
    awaitable<bool> pause(Connection& connection, long milliseconds);
    template <class Stream>
    awaitable<void> serve_requests(Stream& stream, const std::shared_ptr<Connection>& connection, SeenRequest base);
    template <class Stream>
    awaitable<bool> respond(Stream& stream, Connection& connection, const Request& request);
    template <class Stream>
    awaitable<bool> send_chunks(Stream& stream, Connection& connection, const Request& request, bool sse);
    template <class Stream>
    awaitable<void> echo_websocket(Stream& stream, const Request& request);
    template <class Stream>
    awaitable<void> finish(Stream& stream, const std::shared_ptr<Connection>& connection);
};

TestUpstream::Impl::Impl(Options chosen) : options(std::move(chosen)) {
    const tcp::endpoint endpoint(asio::ip::make_address(options.address), 0);
    acceptor.open(endpoint.protocol());
    acceptor.bind(endpoint);
    acceptor.listen();
    port = acceptor.local_endpoint().port();
    if (options.tls) {
        tls.emplace(asio::ssl::context::tls_server);
        tls->use_certificate_chain_file(options.tls->cert_file.string());
        tls->use_private_key_file(options.tls->key_file.string(), asio::ssl::context::pem);
        SSL_CTX_set_alpn_select_cb(tls->native_handle(), select_http11, nullptr);
    }
}

void TestUpstream::Impl::stop() {
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    for (const auto& connection : live) {
        connection->socket.close(ignored);
        connection->timer.cancel();
    }
}

void TestUpstream::Impl::record(SeenRequest request) {
    const std::lock_guard lock(mutex);
    seen.push_back(std::move(request));
    changed.notify_all();
}

awaitable<void> TestUpstream::Impl::accept_loop() {
    for (;;) {
        error_code ec;
        tcp::socket socket = co_await acceptor.async_accept(with(ec));
        if (stopping) co_return;
        if (ec) continue;
        {
            const std::lock_guard lock(mutex);
            ++accepted;
        }
        auto connection = std::make_shared<Connection>(std::move(socket), ++connections);
        asio::co_spawn(io, serve(std::move(connection)), asio::detached);
    }
}

awaitable<void> TestUpstream::Impl::serve(std::shared_ptr<Connection> connection) {
    if (stopping) co_return;
    live.insert(connection);
    struct Unlist {
        std::set<std::shared_ptr<Connection>>& live;
        std::shared_ptr<Connection> connection;
        ~Unlist() { live.erase(connection); }
    } unlist{live, connection};
    error_code ec;
    connection->socket.set_option(tcp::no_delay(true), ec);
    SeenRequest base;
    base.connection = connection->id;
    if (!tls) {
        co_await serve_requests(connection->socket, connection, std::move(base));
        co_return;
    }
    asio::ssl::stream<tcp::socket&> stream(connection->socket, *tls);
    co_await stream.async_handshake(asio::ssl::stream_base::server, with(ec));
    if (ec) co_return;
    base.tls = true;
    const char* name = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
    base.sni = name != nullptr ? name : "";
    co_await serve_requests(stream, connection, std::move(base));
}

awaitable<bool> TestUpstream::Impl::pause(Connection& connection, long milliseconds) {
    if (stopping) co_return false;
    connection.timer.expires_after(std::chrono::milliseconds(milliseconds));
    error_code ec;
    co_await connection.timer.async_wait(with(ec));
    co_return !ec && !stopping;
}

template <class Stream>
awaitable<void> TestUpstream::Impl::serve_requests(Stream& stream, const std::shared_ptr<Connection>& connection,
                                                   SeenRequest base) {
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(kBodyLimit);
        parser.header_limit(kHeaderLimit);
        error_code ec;
        co_await http::async_read_header(stream, buffer, parser, with(ec));
        if (ec) break;
        SeenRequest entry = base;
        if (parser.get().version() >= 11 && !parser.is_done() &&
            beast::iequals(parser.get()[http::field::expect], "100-continue")) {
            co_await asio::async_write(stream, asio::buffer(std::string_view("HTTP/1.1 100 Continue\r\n\r\n")),
                                       with(ec));
            if (ec) break;
            entry.sent_continue = true;
        }
        if (!parser.is_done()) co_await http::async_read(stream, buffer, parser, with(ec));
        if (ec) break;
        const Request request = parser.release();
        entry.method = std::string(request.method_string());
        entry.target = std::string(request.target());
        for (const auto& field : request) entry.headers.emplace_back(field.name_string(), field.value());
        entry.body = request.body();
        record(std::move(entry));
        if (options.websocket && websocket::is_upgrade(request) && Target(view(request.target())).path == "/ws") {
            co_await echo_websocket(stream, request);
            co_return;
        }
        if (!co_await respond(stream, *connection, request)) break;
    }
    co_await finish(stream, connection);
}

template <class Stream>
awaitable<bool> TestUpstream::Impl::respond(Stream& stream, Connection& connection, const Request& request) {
    const Target target(view(request.target()));
    if (target.path == "/sse" || target.path == "/chunked") {
        co_return co_await send_chunks(stream, connection, request, target.path == "/sse");
    }
    if (target.path == "/slow" && !co_await pause(connection, target.number("ms", 0, 600'000))) co_return false;

    http::response<http::string_body> response{http::status::ok, request.version()};
    response.set(http::field::content_type, "application/json");
    response.set("X-Upstream", "test");
    response.keep_alive(request.keep_alive());
    if (target.path == "/bytes") {
        response.set(http::field::content_type, "application/octet-stream");
        response.body().assign(static_cast<std::size_t>(target.number("n", 0, 1L << 30)), 'x');
    } else if (target.path.starts_with("/status/")) {
        long code = Target::number(std::string_view(target.path).substr(8), 0);
        if (code < 200 || code > 599) code = 400;
        response.result(static_cast<unsigned>(code));
        if (code != 204 && code != 304) response.body() = nlohmann::json{{"status", code}}.dump();
    } else {
        response.body() = echo_json(request);
        if (target.path == "/close") response.keep_alive(false);
    }
    response.prepare_payload();
    http::response_serializer<http::string_body> serializer(response);
    error_code ec;
    if (request.method() == http::verb::head) {
        co_await http::async_write_header(stream, serializer, with(ec));
    } else {
        co_await http::async_write(stream, serializer, with(ec));
    }
    co_return !ec && response.keep_alive();
}

template <class Stream>
awaitable<bool> TestUpstream::Impl::send_chunks(Stream& stream, Connection& connection, const Request& request,
                                                bool sse) {
    const Target target(view(request.target()));
    const long count = target.number("n", 3, 1'000'000);
    const long interval = sse ? target.number("interval_ms", 0, 600'000) : 0;
    http::response<http::empty_body> response{http::status::ok, request.version()};
    response.set(http::field::content_type, sse ? "text/event-stream" : "text/plain");
    if (sse) response.set(http::field::cache_control, "no-cache");
    response.set("X-Upstream", "test");
    response.keep_alive(request.keep_alive());
    response.chunked(true);
    http::response_serializer<http::empty_body> serializer(response);
    error_code ec;
    co_await http::async_write_header(stream, serializer, with(ec));
    if (ec || request.method() == http::verb::head) co_return !ec && response.keep_alive();
    for (long i = 0; i < count && !ec; ++i) {
        if (i > 0 && interval > 0 && !co_await pause(connection, interval)) co_return false;
        const std::string text = (sse ? "data: " : "chunk ") + std::to_string(i) + (sse ? "\n\n" : "\n");
        co_await asio::async_write(stream, http::make_chunk(asio::buffer(text)), with(ec));
    }
    if (!ec) co_await asio::async_write(stream, http::make_chunk_last(), with(ec));
    co_return !ec && response.keep_alive();
}

template <class Stream>
awaitable<void> TestUpstream::Impl::echo_websocket(Stream& stream, const Request& request) {
    websocket::stream<Stream&> socket(stream);
    error_code ec;
    co_await socket.async_accept(request, with(ec));
    beast::flat_buffer message;
    while (!ec) {
        co_await socket.async_read(message, with(ec));
        if (ec) break;
        socket.text(socket.got_text());
        co_await socket.async_write(message.data(), with(ec));
        message.consume(message.size());
    }
}

// Closes gracefully: TLS close_notify, or a TCP FIN and reading until the
// client closes too (so unread input does not turn into a reset); at most
// kCloseTimeout, after which the socket is just closed.
template <class Stream>
awaitable<void> TestUpstream::Impl::finish(Stream& stream, const std::shared_ptr<Connection>& connection) {
    if (stopping || !connection->socket.is_open()) co_return;
    connection->timer.expires_after(kCloseTimeout);
    connection->timer.async_wait([connection](error_code expired) {
        if (!expired) connection->socket.close(expired);
    });
    error_code ec;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
        connection->socket.shutdown(tcp::socket::shutdown_send, ec);
        char discard[4096];
        while (!ec) co_await connection->socket.async_read_some(asio::buffer(discard), with(ec));
    } else {
        co_await stream.async_shutdown(with(ec));
    }
    connection->timer.cancel();
}

TestUpstream::TestUpstream() : TestUpstream(Options{}) {}

TestUpstream::TestUpstream(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {
    asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
    impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

TestUpstream::~TestUpstream() {
    asio::post(impl_->io, [impl = impl_.get()] { impl->stop(); });
    impl_->thread.join();
}

unsigned short TestUpstream::port() const {
    return impl_->port;
}

const std::string& TestUpstream::address() const {
    return impl_->options.address;
}

std::string TestUpstream::url(const std::string& path) const {
    const bool v6 = address().find(':') != std::string::npos;
    return std::string(impl_->tls ? "https://" : "http://") + (v6 ? "[" + address() + "]" : address()) + ":" +
           std::to_string(port()) + path;
}

std::vector<SeenRequest> TestUpstream::requests() const {
    const std::lock_guard lock(impl_->mutex);
    return impl_->seen;
}

std::size_t TestUpstream::connections_accepted() const {
    const std::lock_guard lock(impl_->mutex);
    return impl_->accepted;
}

void TestUpstream::clear() {
    const std::lock_guard lock(impl_->mutex);
    impl_->seen.clear();
    impl_->accepted = 0;
}

bool TestUpstream::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(impl_->mutex);
    return impl_->changed.wait_for(lock, timeout, [&] { return impl_->seen.size() >= n; });
}

}  // namespace tameflare::testing
