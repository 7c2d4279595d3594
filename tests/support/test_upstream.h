// A loopback HTTP/1.1 (or HTTPS) server for the proxy's integration tests:
// it records every request it receives and answers on a few routes:
//
//   any other path            200 JSON echo {"method","target","headers","body_bytes","body"}
//   /status/<code>            that status (200..599) with a small JSON body
//   /bytes?n=N                N bytes of 'x'
//   /chunked?n=K              K chunks "chunk <i>\n"
//   /sse?n=K&interval_ms=M    text/event-stream, K events "data: <i>\n\n", one chunk each, M ms apart
//   /slow?ms=M                the echo, after M ms
//   /close                    the echo with Connection: close, then closes
//   /ws (WebSocket upgrade)   echoes every message until the client closes
//
// Every response carries `X-Upstream: test`. A request with a body and
// `Expect: 100-continue` gets an interim 100 Continue before its body is read.
// Connections are kept alive and pipelined requests are answered in order.
// RAII: the constructor listens and starts one server thread; the destructor
// closes every socket and joins it.
#pragma once

#include "tests/support/test_ca.h"

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::testing {

struct SeenRequest {
    std::string method;
    std::string target;
    std::vector<std::pair<std::string, std::string>> headers;  // in order, names as sent
    std::string body;
    bool tls = false;
    std::string sni;             // the TLS server name the client sent, if any
    bool sent_continue = false;  // the server answered Expect: 100-continue
    std::size_t connection = 0;  // which accepted connection, from 1 (clear() does not restart it)
};

class TestUpstream {
public:
    struct Options {
        std::string address = "127.0.0.1";  // any 127.0.0.x, or "::1"
        std::optional<LeafFiles> tls;       // serve HTTPS with this certificate (ALPN http/1.1)
        bool websocket = true;              // accept WebSocket upgrades on /ws
    };

    TestUpstream();
    explicit TestUpstream(Options options);
    TestUpstream(const TestUpstream&) = delete;
    TestUpstream& operator=(const TestUpstream&) = delete;
    ~TestUpstream();

    [[nodiscard]] unsigned short port() const;
    [[nodiscard]] const std::string& address() const;
    // "http://127.0.0.1:<port><path>" ("https" with TLS; IPv6 in brackets).
    [[nodiscard]] std::string url(const std::string& path = "/") const;

    [[nodiscard]] std::vector<SeenRequest> requests() const;
    [[nodiscard]] std::size_t connections_accepted() const;
    // Forgets the requests seen and resets the connection count.
    void clear();
    // True once at least `n` requests were seen, false after `timeout`.
    bool wait_for_requests(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tameflare::testing
