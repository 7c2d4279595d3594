// tf's client of tameflared's REST control socket (docs/api.md): HTTP/1.1
// over a unix socket with Boost.Beast, one connection per call, JSON with
// nlohmann. Synchronous: tf does one thing at a time, and the event stream,
// the one long call, can be interrupted from another thread.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tameflare::cli {

// Where the socket is and who may open it, as found by api_socket().
struct ApiSocket {
    std::string path;
    std::string group;  // the socket's group as configured, for the EACCES hint
};

// --socket PATH when given, else $TAMEFLARE_API_SOCKET, else the daemon
// configuration's api.socket (default <runtime_dir>/api.sock). `config_file`
// is -c FILE ("" for the default file, whose absence or unreadability means
// the built-in defaults). nullopt with `error` set when -c FILE is invalid.
std::optional<ApiSocket> api_socket(const std::string& given, const std::string& config_file, std::string& error);

// The daemon cannot be reached (no socket, nobody listening, no permission,
// or it went away mid-call). The message is complete, with what to do.
class ApiUnreachable : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct ApiResponse {
    unsigned status = 0;
    std::string content_type;
    std::string body;     // as received (empty for a streamed 2xx body)
    nlohmann::json json;  // the body parsed, when it is JSON; null otherwise

    [[nodiscard]] bool ok() const { return status >= 200 && status < 300; }
    // The API's error document {error, message, hint}, or what can be said
    // about a body that is not one.
    [[nodiscard]] std::string error_code() const;
    [[nodiscard]] std::string error_message() const;
    [[nodiscard]] std::string error_hint() const;
};

// A call the daemon answered with an error status; thrown where a caller
// asked for a successful answer (ApiClient::events, require_ok).
class ApiFailure : public std::runtime_error {
public:
    explicit ApiFailure(ApiResponse response)
        : std::runtime_error(response.error_message()), response_(std::move(response)) {}
    [[nodiscard]] const ApiResponse& response() const { return response_; }

private:
    ApiResponse response_;
};

// Throws ApiFailure unless `response` succeeded.
void require_ok(const ApiResponse& response);
// The JSON body of a successful response; throws ApiFailure otherwise.
nlohmann::json json_of(ApiResponse response);

// One Server-Sent Event.
struct SseEvent {
    std::string id;
    std::string type = "message";  // the `event:` field
    std::string data;              // `data:` lines joined with '\n'
};

// The text/event-stream format (WHATWG HTML, "server-sent events"): feed it
// the body as it arrives, take the complete events out.
class SseParser {
public:
    void feed(std::string_view bytes);
    std::optional<SseEvent> next();

private:
    void line(std::string_view text);

    std::string pending_;   // an incomplete line
    bool skip_lf_ = false;  // the last line ended in CR: a following LF belongs to it
    SseEvent event_;
    bool has_data_ = false;
    std::deque<SseEvent> ready_;
};

// An open GET /v1/events.
class EventStream {
public:
    ~EventStream();
    EventStream(const EventStream&) = delete;
    EventStream& operator=(const EventStream&) = delete;

    // The next event; nullopt when the daemon ended the stream or
    // interrupt() was called. Throws ApiUnreachable when the connection breaks.
    std::optional<SseEvent> next();
    // From any thread: makes a blocked next() return nullopt.
    void interrupt();
    [[nodiscard]] bool interrupted() const { return interrupted_; }

    struct Impl;
    explicit EventStream(std::unique_ptr<Impl> impl);

private:
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> interrupted_{false};
};

// Breaks off a client's calls from another thread, at any moment: while a
// connection of the client is open its descriptor is registered here, and
// interrupt() shuts it down (a blocked read or connect returns at once). Every
// call after interrupt() fails with ApiUnreachable.
class Interrupter {
public:
    void interrupt();
    [[nodiscard]] bool interrupted() const;

    // For the client: false (and nothing registered) once interrupted.
    bool attach(int fd);
    void detach(int fd);

private:
    mutable std::mutex mutex_;
    std::set<int> fds_;
    bool interrupted_ = false;
};

class ApiClient {
public:
    explicit ApiClient(ApiSocket socket, std::shared_ptr<Interrupter> interrupter = nullptr)
        : socket_(std::move(socket)), interrupter_(std::move(interrupter)) {}

    [[nodiscard]] const ApiSocket& socket() const { return socket_; }
    [[nodiscard]] const std::string& socket_path() const { return socket_.path; }

    // Throw ApiUnreachable; any HTTP status is returned. A request body is
    // wiped from tf's memory once sent (it may carry a vault value).
    ApiResponse get(std::string_view target) const;
    ApiResponse put(std::string_view target, const nlohmann::json& body) const;
    ApiResponse post(std::string_view target, const nlohmann::json& body = nullptr) const;
    ApiResponse del(std::string_view target) const;

    // GET with a body of any size: a successful body is passed to `chunk` as
    // it arrives (`chunk` returns false to stop), an error body is read into
    // the response.
    ApiResponse stream(std::string_view target, const std::function<bool(std::string_view)>& chunk) const;

    // GET an event stream (/v1/events?types=...); throws ApiFailure when the
    // daemon refuses it.
    std::unique_ptr<EventStream> events(std::string_view target) const;

private:
    ApiResponse call(std::string_view method, std::string_view target, const nlohmann::json* body) const;

    ApiSocket socket_;
    std::shared_ptr<Interrupter> interrupter_;
};

// A path segment or query value, percent-encoded (RFC 3986 unreserved kept).
std::string url_encode(std::string_view text);

}  // namespace tameflare::cli
