#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "cli/api_client.h"

#include "daemon/daemon_config.h"

#include <openssl/crypto.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace tameflare::cli {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = net::local::stream_protocol;

// Answers are small JSON documents; logs in JSON are the largest.
constexpr std::uint64_t kMaxBody = std::uint64_t{256} << 20;
// Not boost::none: Beast 1.74 compares a Content-Length with the optional,
// and every length is greater than none.
constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();
// An error body read while streaming is kept to this much.
constexpr std::size_t kMaxErrorBody = std::size_t{1} << 20;

constexpr const char* kDefaultGroup = "tameflare-viewer";

std::string not_running(const std::string& path) {
    return "tameflared is not running or its API socket is elsewhere: " + path +
           "; start it (systemctl start tameflared) or pass --socket";
}

std::string denied(const ApiSocket& socket) {
    std::string text = "permission denied on " + socket.path + ": ";
    if (socket.group.empty()) {
        text += "only root may open it (api.socket_group is empty in tameflared's configuration)";
    } else if (socket.group == kDefaultGroup) {
        text +=
            "you are not in group tameflare-viewer (or the configured socket group); ask an admin to add you "
            "(usermod -aG tameflare-viewer USER) and log in again";
    } else {
        text += "you are not in group " + socket.group +
                " (the configured socket group); ask an admin to add you "
                "(usermod -aG " +
                socket.group + " USER) and log in again";
    }
    return text;
}

std::string reason_phrase(unsigned status) {
    const auto reason = http::obsolete_reason(http::int_to_status(status));
    return std::string(reason.data(), reason.size());
}

struct Connection {
    Connection() = default;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection() {
        if (interrupter != nullptr) interrupter->detach(socket.native_handle());
    }

    net::io_context io;
    Local::socket socket{io};
    beast::flat_buffer buffer;
    Interrupter* interrupter = nullptr;  // set while the socket is registered with it
};

std::unique_ptr<Connection> connect(const ApiSocket& where, Interrupter* interrupter) {
    Local::endpoint endpoint;
    try {
        endpoint = Local::endpoint(where.path);
    } catch (const boost::system::system_error&) {
        throw ApiUnreachable("the API socket path is too long for a unix socket: " + where.path);
    }
    auto connection = std::make_unique<Connection>();
    boost::system::error_code error;
    if (interrupter != nullptr) {
        connection->socket.open(Local(), error);
        if (error) throw ApiUnreachable("cannot reach tameflared at " + where.path + ": " + error.message());
        if (!interrupter->attach(connection->socket.native_handle())) throw ApiUnreachable("interrupted");
        connection->interrupter = interrupter;
    }
    connection->socket.connect(endpoint, error);
    if (!error) return connection;
    namespace errc = boost::system::errc;
    if (error == errc::no_such_file_or_directory || error == errc::connection_refused ||
        error == errc::not_a_directory) {
        throw ApiUnreachable(not_running(where.path));
    }
    if (error == errc::permission_denied || error == errc::operation_not_permitted) {
        throw ApiUnreachable(denied(where));
    }
    throw ApiUnreachable("cannot reach tameflared at " + where.path + ": " + error.message());
}

std::string broken(const ApiSocket& where, const boost::system::error_code& error) {
    return "tameflared closed the connection on " + where.path + " (" + error.message() +
           "); is it stopping? (systemctl status tameflared)";
}

template <typename Request>
void prepare(Request& request) {
    // The host is ignored by the daemon, but HTTP/1.1 requires one.
    request.set(http::field::host, "localhost");
    request.set(http::field::user_agent, "tf/" TF_VERSION);
    request.keep_alive(false);
}

void parse_json(ApiResponse& response) {
    const bool json_type = response.content_type.starts_with("application/json") ||
                           response.content_type.starts_with("application/problem+json");
    const bool looks_json = !response.body.empty() && (response.body.front() == '{' || response.body.front() == '[');
    if (!json_type && !looks_json) return;
    auto parsed = nlohmann::json::parse(response.body, nullptr, false);
    if (!parsed.is_discarded()) response.json = std::move(parsed);
}

template <typename Fields>
void take_head(ApiResponse& response, const http::response_header<Fields>& head) {
    response.status = head.result_int();
    const auto type = head[http::field::content_type];
    response.content_type.assign(type.data(), type.size());
}

// Reads the rest of `parser`'s body in pieces, giving each to `chunk` (which
// returns false to stop).
template <typename Parser>
void read_body(Connection& connection, Parser& parser, const ApiSocket& where,
               const std::function<bool(std::string_view)>& chunk) {
    std::array<char, 1 << 16> piece{};
    while (!parser.is_done()) {
        parser.get().body().data = piece.data();
        parser.get().body().size = piece.size();
        boost::system::error_code error;
        http::read_some(connection.socket, connection.buffer, parser, error);
        if (error == http::error::need_buffer) error = {};
        if (error) throw ApiUnreachable(broken(where, error));
        const std::size_t got = piece.size() - parser.get().body().size;
        if (got > 0 && !chunk(std::string_view(piece.data(), got))) return;
    }
}

}  // namespace

std::optional<ApiSocket> api_socket(const std::string& given, const std::string& config_file, std::string& error) {
    ApiSocket socket;
    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(config_file.empty() ? daemon::kDefaultConfigFile : config_file,
                                                   !config_file.empty(), errors);
    if (config) {
        socket.path = config->api_socket_path().string();
        socket.group = config->api.socket_group;
    } else if (!config_file.empty()) {
        // A file named with -c must be right; the default file may be unreadable to this user.
        error = policy::format_errors(errors);
        return std::nullopt;
    } else {
        const daemon::DaemonConfig defaults;
        socket.path = defaults.api_socket_path().string();
        socket.group = defaults.api.socket_group;
    }
    if (const char* env = std::getenv("TAMEFLARE_API_SOCKET"); env != nullptr && *env != '\0') socket.path = env;
    if (!given.empty()) socket.path = given;
    return socket;
}

std::string ApiResponse::error_code() const {
    if (json.is_object() && json.contains("error") && json["error"].is_string()) return json["error"];
    return "http_" + std::to_string(status);
}

std::string ApiResponse::error_message() const {
    if (json.is_object() && json.contains("message") && json["message"].is_string()) return json["message"];
    std::string text = "tameflared answered " + std::to_string(status) + " " + reason_phrase(status);
    if (!body.empty()) text += ": " + body.substr(0, 200);
    return text;
}

std::string ApiResponse::error_hint() const {
    if (json.is_object() && json.contains("hint") && json["hint"].is_string()) return json["hint"];
    return {};
}

void require_ok(const ApiResponse& response) {
    if (!response.ok()) throw ApiFailure(response);
}

nlohmann::json json_of(ApiResponse response) {
    if (!response.ok()) throw ApiFailure(std::move(response));
    return std::move(response.json);
}

// ---------------------------------------------------------------------------

void SseParser::feed(std::string_view bytes) {
    for (const char c : bytes) {
        if (skip_lf_) {
            skip_lf_ = false;
            if (c == '\n') continue;
        }
        if (c == '\r' || c == '\n') {
            skip_lf_ = c == '\r';
            line(pending_);
            pending_.clear();
        } else {
            pending_ += c;
        }
    }
}

std::optional<SseEvent> SseParser::next() {
    if (ready_.empty()) return std::nullopt;
    auto event = std::move(ready_.front());
    ready_.pop_front();
    return event;
}

void SseParser::line(std::string_view text) {
    if (text.empty()) {  // dispatch
        if (has_data_) ready_.push_back(std::move(event_));
        const std::string last_id = event_.id;  // the id persists across events
        event_ = SseEvent{};
        event_.id = last_id;
        has_data_ = false;
        return;
    }
    if (text.front() == ':') return;  // a comment (keep-alive)
    const auto colon = text.find(':');
    const std::string_view field = text.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
    if (field == "data") {
        if (has_data_) event_.data += '\n';
        event_.data += value;
        has_data_ = true;
    } else if (field == "event") {
        event_.type = value.empty() ? "message" : std::string(value);
    } else if (field == "id") {
        if (value.find('\0') == std::string_view::npos) event_.id = value;
    }
    // "retry" and unknown fields are ignored: tf's own backoff decides when
    // to reconnect (FollowStream).
}

// ---------------------------------------------------------------------------

struct EventStream::Impl {
    ApiSocket where;
    std::unique_ptr<Connection> connection;
    http::response_parser<http::buffer_body> parser;
    SseParser events;
    int fd = -1;  // for interrupt(), from another thread
};

EventStream::EventStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventStream::~EventStream() = default;

std::optional<SseEvent> EventStream::next() {
    std::array<char, 1 << 14> piece{};
    for (;;) {
        if (auto event = impl_->events.next()) return event;
        if (interrupted_ || impl_->parser.is_done()) return std::nullopt;
        impl_->parser.get().body().data = piece.data();
        impl_->parser.get().body().size = piece.size();
        boost::system::error_code error;
        http::read_some(impl_->connection->socket, impl_->connection->buffer, impl_->parser, error);
        if (error == http::error::need_buffer) error = {};
        if (interrupted_) return std::nullopt;
        // The daemon stopping ends the stream; that is not a broken connection.
        if (error == http::error::end_of_stream || error == http::error::partial_message || error == net::error::eof ||
            error == net::error::connection_reset) {
            return std::nullopt;
        }
        if (error) throw ApiUnreachable(broken(impl_->where, error));
        impl_->events.feed(std::string_view(piece.data(), piece.size() - impl_->parser.get().body().size));
    }
}

void EventStream::interrupt() {
    interrupted_ = true;
    // shutdown(2) wakes a thread blocked in read on the socket; the
    // descriptor itself stays open until the owner destroys the stream.
    ::shutdown(impl_->fd, SHUT_RDWR);
}

// ---------------------------------------------------------------------------

ApiResponse ApiClient::call(std::string_view method, std::string_view target, const nlohmann::json* body) const {
    auto connection = connect(socket_, interrupter_.get());
    http::request<http::string_body> request{http::string_to_verb(beast::string_view(method.data(), method.size())),
                                             std::string(target), 11};
    prepare(request);
    request.set(http::field::accept, "application/json");
    if (body != nullptr && !body->is_null()) {
        request.set(http::field::content_type, "application/json");
        request.body() = body->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    request.prepare_payload();
    boost::system::error_code error;
    http::write(connection->socket, request, error);
    OPENSSL_cleanse(request.body().data(), request.body().size());
    if (error) throw ApiUnreachable(broken(socket_, error));

    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    http::read(connection->socket, connection->buffer, parser, error);
    if (error) throw ApiUnreachable(broken(socket_, error));
    ApiResponse response;
    take_head(response, parser.get().base());
    response.body = std::move(parser.get().body());
    parse_json(response);
    return response;
}

ApiResponse ApiClient::get(std::string_view target) const {
    return call("GET", target, nullptr);
}
ApiResponse ApiClient::put(std::string_view target, const nlohmann::json& body) const {
    return call("PUT", target, &body);
}
ApiResponse ApiClient::post(std::string_view target, const nlohmann::json& body) const {
    return call("POST", target, &body);
}
ApiResponse ApiClient::del(std::string_view target) const {
    return call("DELETE", target, nullptr);
}

ApiResponse ApiClient::stream(std::string_view target, const std::function<bool(std::string_view)>& chunk) const {
    auto connection = connect(socket_, interrupter_.get());
    http::request<http::empty_body> request{http::verb::get, std::string(target), 11};
    prepare(request);
    boost::system::error_code error;
    http::write(connection->socket, request, error);
    if (error) throw ApiUnreachable(broken(socket_, error));

    http::response_parser<http::buffer_body> parser;
    parser.body_limit(kUnlimited);  // exports have no size limit
    http::read_header(connection->socket, connection->buffer, parser, error);
    if (error) throw ApiUnreachable(broken(socket_, error));
    ApiResponse response;
    take_head(response, parser.get().base());
    if (response.ok()) {
        read_body(*connection, parser, socket_, chunk);
        return response;
    }
    read_body(*connection, parser, socket_, [&response](std::string_view piece) {
        response.body.append(piece.substr(0, kMaxErrorBody - std::min(kMaxErrorBody, response.body.size())));
        return response.body.size() < kMaxErrorBody;
    });
    parse_json(response);
    return response;
}

std::unique_ptr<EventStream> ApiClient::events(std::string_view target) const {
    auto impl = std::make_unique<EventStream::Impl>();
    impl->where = socket_;
    impl->connection = connect(socket_, interrupter_.get());
    impl->fd = impl->connection->socket.native_handle();
    http::request<http::empty_body> request{http::verb::get, std::string(target), 11};
    prepare(request);
    request.set(http::field::accept, "text/event-stream");
    boost::system::error_code error;
    http::write(impl->connection->socket, request, error);
    if (error) throw ApiUnreachable(broken(socket_, error));
    impl->parser.body_limit(kUnlimited);  // a stream has no end
    http::read_header(impl->connection->socket, impl->connection->buffer, impl->parser, error);
    if (error) throw ApiUnreachable(broken(socket_, error));
    ApiResponse head;
    take_head(head, impl->parser.get().base());
    if (!head.ok()) {
        read_body(*impl->connection, impl->parser, socket_, [&head](std::string_view piece) {
            head.body.append(piece);
            return head.body.size() < kMaxErrorBody;
        });
        parse_json(head);
        throw ApiFailure(std::move(head));
    }
    return std::make_unique<EventStream>(std::move(impl));
}

void Interrupter::interrupt() {
    const std::lock_guard lock(mutex_);
    interrupted_ = true;
    // shutdown(2) wakes a thread blocked on the socket; the descriptor stays
    // open until its owner closes it (and detaches it first).
    for (const int fd : fds_) ::shutdown(fd, SHUT_RDWR);
}

bool Interrupter::interrupted() const {
    const std::lock_guard lock(mutex_);
    return interrupted_;
}

bool Interrupter::attach(int fd) {
    const std::lock_guard lock(mutex_);
    if (interrupted_) return false;
    fds_.insert(fd);
    return true;
}

void Interrupter::detach(int fd) {
    const std::lock_guard lock(mutex_);
    fds_.erase(fd);
}

std::string url_encode(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            out += c;
        } else {
            out += '%';
            out += kHex[byte >> 4];
            out += kHex[byte & 0xf];
        }
    }
    return out;
}

}  // namespace tameflare::cli
