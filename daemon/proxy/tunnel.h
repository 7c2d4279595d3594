// Copying bytes both ways between two streams once a connection is no
// longer HTTP (a WebSocket after 101, an allowed raw TCP connection).
#pragma once

#include "daemon/proxy/asio.h"

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace tameflare::proxy {

namespace detail {

template <class Stream>
constexpr bool kPlainTcp = std::is_same_v<Stream, beast::tcp_stream>;

// Copies `from` to `to` until EOF or an error, starting with bytes already
// read from `from` into `pending`. Returns the bytes copied.
template <class From, class To>
net::awaitable<std::uint64_t> pump(From& from, To& to, beast::flat_buffer& pending) {
    boost::system::error_code error;
    std::uint64_t total = pending.size();
    if (pending.size() != 0) {
        co_await net::async_write(to, pending.data(), net::redirect_error(net::use_awaitable, error));
        pending.consume(pending.size());
        if (error) co_return total;
    }
    std::vector<char> chunk(16384);
    for (;;) {
        const std::size_t n =
            co_await from.async_read_some(net::buffer(chunk), net::redirect_error(net::use_awaitable, error));
        if (error) break;
        co_await net::async_write(to, net::buffer(chunk.data(), n), net::redirect_error(net::use_awaitable, error));
        if (error) break;
        total += n;
    }
    // Plain TCP passes the half-close on; anything else ends both ways.
    boost::system::error_code ignored;
    if (error == net::error::eof && kPlainTcp<To>) {
        beast::get_lowest_layer(to).socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
    } else {
        beast::get_lowest_layer(to).socket().close(ignored);
        beast::get_lowest_layer(from).socket().close(ignored);
    }
    co_return total;
}

}  // namespace detail

// Runs until both directions have ended. Returns {bytes a->b, bytes b->a}.
template <class A, class B>
net::awaitable<std::pair<std::uint64_t, std::uint64_t>> tunnel(A& a, beast::flat_buffer& a_pending, B& b,
                                                               beast::flat_buffer& b_pending) {
    auto executor = co_await net::this_coro::executor;
    net::steady_timer done(executor, net::steady_timer::time_point::max());
    std::uint64_t back = 0;
    bool finished = false;
    net::co_spawn(
        executor,
        [&]() -> net::awaitable<void> {
            back = co_await detail::pump(b, a, b_pending);
            finished = true;
            done.cancel();
        },
        net::detached);
    const std::uint64_t forth = co_await detail::pump(a, b, a_pending);
    if (!finished) {
        boost::system::error_code ignored;
        co_await done.async_wait(net::redirect_error(net::use_awaitable, ignored));
    }
    co_return std::pair{forth, back};
}

}  // namespace tameflare::proxy
