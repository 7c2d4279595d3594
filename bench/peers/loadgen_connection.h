// One client connection of tf_loadgen: dial, CONNECT through the proxy, TLS,
// then GETs on it, each response parsed by Beast and checked.
#pragma once

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include "bench/peers/loadgen_stats.h"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tameflare::loadgen {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// No answer within this long fails the request (or the connection set-up) as a timeout.
inline constexpr std::chrono::seconds kRequestTimeout{30};

// What every connection of a run shares, built once before the first connects.
struct Target {
    tcp::endpoint endpoint;       // what to dial: the proxy, --connect-to, or the URL's host
    ssl::context* tls = nullptr;  // the run's one client context; null for http://
    std::string name;             // the URL's host: SNI and the name the certificate must match
    bool name_is_ip = false;      // verified against the certificate's IP addresses instead
    std::string connect_request;  // CONNECT head; empty unless https:// through a proxy
    std::string request;          // the GET: the same bytes every time
    std::optional<std::uint64_t> expect_bytes;
    std::uint64_t body_limit = 0;
    std::size_t read_buffer = 0;  // bytes reserved for reading; 0 lets idle connections stay small
};

struct Failure {
    ErrorKind kind;
    std::string detail;
    // The connection was found closed before any byte of a response: on a
    // kept-alive connection, the peer closed it while it was idle.
    bool closed_before_response = false;
};

struct Response {
    std::uint64_t body_bytes = 0;
    bool keep_alive = false;
};

class Connection {
public:
    // `opened` counts the TCP connections made, for the report.
    Connection(const net::any_io_executor& executor, const Target& target, std::uint64_t& opened);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // TCP connect, CONNECT through the proxy, TLS handshake: what the URL needs.
    net::awaitable<std::optional<Failure>> open();
    // One GET and its whole response, checked against --expect-bytes.
    net::awaitable<std::optional<Failure>> request(Response& response);
    // Until the peer closes the connection (or abort()); discards what it sends.
    net::awaitable<void> hold();

    bool is_open() const { return socket_.is_open(); }
    // Closes the socket so whatever is pending fails; safe at any time.
    void abort();
    // Forgets the TLS session and the socket; only while nothing is pending.
    void reset();
    // Aborts the pending operation if its deadline has passed (a timeout).
    void expire(Clock::time_point now);
    // For a connection about to sit idle: gives back the read buffer.
    void release_buffers();

private:
    net::awaitable<std::optional<Failure>> tunnel();
    net::awaitable<std::optional<Failure>> handshake();
    template <typename Stream>
    net::awaitable<std::optional<Failure>> exchange(Stream& stream, Response& response);
    // The failure to report: a timeout when the deadline closed the socket.
    Failure fail(ErrorKind kind, std::string detail) const;

    const Target& target_;
    std::uint64_t& opened_;
    tcp::socket socket_;
    std::optional<ssl::stream<tcp::socket&>> tls_;
    boost::beast::flat_buffer buffer_;
    Clock::time_point deadline_ = Clock::time_point::max();
    bool timed_out_ = false;
    const char* stage_ = "";  // what a timeout interrupted, for its message
};

}  // namespace tameflare::loadgen
