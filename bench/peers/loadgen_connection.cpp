#include "bench/peers/loadgen_connection.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include <array>

namespace tameflare::loadgen {

namespace {

namespace http = boost::beast::http;
using boost::system::error_code;
constexpr auto kToken = net::use_awaitable;

// A response body that is only counted: no copy, no allocation, whatever its size.
struct CountingBody {
    using value_type = std::uint64_t;

    class reader {
    public:
        template <bool isRequest, class Fields>
        reader(http::header<isRequest, Fields>& /*header*/, value_type& bytes) : bytes_(bytes) {}
        void init(const boost::optional<std::uint64_t>& /*length*/, error_code& ec) { ec = {}; }
        template <class ConstBufferSequence>
        std::size_t put(const ConstBufferSequence& buffers, error_code& ec) {
            const std::size_t n = net::buffer_size(buffers);
            bytes_ += n;
            ec = {};
            return n;
        }
        void finish(error_code& ec) { ec = {}; }

    private:
        value_type& bytes_;
    };
};

// How a socket reports that the peer closed it (TLS: without close_notify).
bool closed(const error_code& ec) {
    return ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
           ec == net::ssl::error::stream_truncated;
}

std::string describe(const tcp::endpoint& endpoint) {
    const auto address = endpoint.address();
    return (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
           std::to_string(endpoint.port());
}

}  // namespace

Connection::Connection(const net::any_io_executor& executor, const Target& target, std::uint64_t& opened)
    : target_(target), opened_(opened), socket_(executor) {
    if (target_.read_buffer > 0) buffer_.reserve(target_.read_buffer);
}

Failure Connection::fail(ErrorKind kind, std::string detail) const {
    if (timed_out_) {
        return {ErrorKind::timeout, "no progress within " + std::to_string(kRequestTimeout.count()) + " s " + stage_};
    }
    return {kind, std::move(detail)};
}

void Connection::abort() {
    error_code ignored;
    socket_.close(ignored);
}

void Connection::reset() {
    tls_.reset();
    abort();
    buffer_.clear();
    timed_out_ = false;
    deadline_ = Clock::time_point::max();
}

void Connection::expire(Clock::time_point now) {
    if (now < deadline_ || !socket_.is_open()) return;
    timed_out_ = true;
    abort();
}

void Connection::release_buffers() {
    buffer_.clear();
    buffer_.shrink_to_fit();
}

net::awaitable<std::optional<Failure>> Connection::open() {
    reset();
    deadline_ = Clock::now() + kRequestTimeout;
    stage_ = "connecting";
    error_code ec;
    co_await socket_.async_connect(target_.endpoint, net::redirect_error(kToken, ec));
    if (ec) co_return fail(ErrorKind::connect, "connect to " + describe(target_.endpoint) + ": " + ec.message());
    ++opened_;
    socket_.set_option(tcp::no_delay(true), ec);
    if (!target_.connect_request.empty()) {
        auto failed = co_await tunnel();
        if (failed) co_return failed;
    }
    if (target_.tls != nullptr) {
        auto failed = co_await handshake();
        if (failed) co_return failed;
    }
    deadline_ = Clock::time_point::max();
    co_return std::nullopt;
}

net::awaitable<std::optional<Failure>> Connection::tunnel() {
    stage_ = "in CONNECT";
    error_code ec;
    co_await net::async_write(socket_, net::buffer(target_.connect_request), net::redirect_error(kToken, ec));
    if (ec) co_return fail(ErrorKind::proxy_connect, "sending CONNECT to the proxy: " + ec.message());
    // A 2xx answer to CONNECT has no body whatever its headers say: skip it.
    http::response_parser<http::empty_body> parser;
    parser.skip(true);
    co_await http::async_read_header(socket_, buffer_, parser, net::redirect_error(kToken, ec));
    if (ec) co_return fail(ErrorKind::proxy_connect, "reading the proxy's answer to CONNECT: " + ec.message());
    const auto& answer = parser.get();
    if (answer.result_int() / 100 != 2) {
        co_return fail(ErrorKind::proxy_connect, "the proxy answered CONNECT with " +
                                                     std::to_string(answer.result_int()) + " " +
                                                     std::string(answer.reason()));
    }
    if (buffer_.size() != 0) {
        co_return fail(ErrorKind::proxy_connect, "the proxy sent " + std::to_string(buffer_.size()) +
                                                     " bytes after its 2xx to CONNECT, before the TLS handshake");
    }
    co_return std::nullopt;
}

net::awaitable<std::optional<Failure>> Connection::handshake() {
    tls_.emplace(socket_, *target_.tls);
    SSL* ssl = tls_->native_handle();
    // SNI carries names only; the name (or IP address) is checked by OpenSSL during the handshake.
    const bool named =
        target_.name_is_ip
            ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), target_.name.c_str()) == 1
            : SSL_set_tlsext_host_name(ssl, target_.name.c_str()) == 1 && SSL_set1_host(ssl, target_.name.c_str()) == 1;
    if (!named) co_return fail(ErrorKind::tls, "cannot set '" + target_.name + "' as the name to verify");
    stage_ = "in the TLS handshake";
    error_code ec;
    co_await tls_->async_handshake(ssl::stream_base::client, net::redirect_error(kToken, ec));
    if (ec) {
        std::string detail = "TLS handshake with '" + target_.name + "': " + ec.message();
        const long verified = SSL_get_verify_result(ssl);
        if (verified != X509_V_OK) detail += std::string(" (") + X509_verify_cert_error_string(verified) + ")";
        co_return fail(ErrorKind::tls, std::move(detail));
    }
    co_return std::nullopt;
}

// Not a coroutine itself: one coroutine frame less per request.
net::awaitable<std::optional<Failure>> Connection::request(Response& response) {
    return tls_ ? exchange(*tls_, response) : exchange(socket_, response);
}

template <typename Stream>
net::awaitable<std::optional<Failure>> Connection::exchange(Stream& stream, Response& response) {
    deadline_ = Clock::now() + kRequestTimeout;
    stage_ = "sending the request";
    error_code ec;
    co_await net::async_write(stream, net::buffer(target_.request), net::redirect_error(kToken, ec));
    if (ec) {
        auto failure = fail(ErrorKind::io, "sending the request: " + ec.message());
        failure.closed_before_response = closed(ec);
        co_return failure;
    }
    http::response_parser<CountingBody> parser;
    parser.body_limit(target_.body_limit);
    parser.get().body() = 0;
    stage_ = "waiting for the response";
    co_await http::async_read(stream, buffer_, parser, net::redirect_error(kToken, ec));
    const std::uint64_t bytes = parser.get().body();
    if (ec == http::error::partial_message) {
        co_return fail(ErrorKind::body, "the response ended after " + std::to_string(bytes) + " body bytes");
    }
    if (ec == http::error::body_limit) {
        co_return fail(ErrorKind::body, "a response body over " + std::to_string(target_.body_limit) + " bytes");
    }
    // Beast's other parse errors: what came is not an HTTP response.
    if (ec && ec != http::error::end_of_stream &&
        ec.category() == http::make_error_code(http::error::bad_version).category()) {
        co_return fail(ErrorKind::protocol, "an invalid HTTP response: " + ec.message());
    }
    if (ec) {
        const bool nothing =
            !parser.got_some() && buffer_.size() == 0 && (ec == http::error::end_of_stream || closed(ec));
        auto failure = fail(ErrorKind::io, nothing ? "the connection closed before a response (" + ec.message() + ")"
                                                   : "reading the response: " + ec.message());
        failure.closed_before_response = nothing;
        co_return failure;
    }
    const unsigned status = parser.get().result_int();
    if (target_.expect_bytes) {
        if (status != 200) co_return fail(ErrorKind::status, "status " + std::to_string(status) + ", expected 200");
        if (bytes != *target_.expect_bytes) {
            co_return fail(ErrorKind::body, "a body of " + std::to_string(bytes) + " bytes, expected " +
                                                std::to_string(*target_.expect_bytes));
        }
    } else if (status / 100 != 2) {
        co_return fail(ErrorKind::status, "status " + std::to_string(status) + ", expected 2xx");
    }
    response.body_bytes = bytes;
    response.keep_alive = parser.keep_alive();
    co_return std::nullopt;
}

net::awaitable<void> Connection::hold() {
    deadline_ = Clock::time_point::max();
    std::array<char, 256> discard{};
    error_code ec;
    while (!ec) {
        if (tls_) {
            co_await tls_->async_read_some(net::buffer(discard), net::redirect_error(kToken, ec));
        } else {
            co_await socket_.async_read_some(net::buffer(discard), net::redirect_error(kToken, ec));
        }
    }
}

}  // namespace tameflare::loadgen
