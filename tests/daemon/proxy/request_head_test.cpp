// Request heads as clients send them, and the malformed shapes that smuggle
// a second request past one parser: each is refused before anything is
// forwarded.
#include "daemon/proxy/request_head.h"
#include "support/loopback.h"
#include "support/subprocess.h"

#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

namespace tameflare::proxy {
namespace {

using Status = HeadResult::Status;

HeadResult parse(std::string_view text) {
    return parse_request_head(text);
}

void expect_bad(std::string_view text, std::string_view why) {
    const HeadResult result = parse(text);
    std::string shown(text);
    for (std::size_t at = shown.find("\r\n"); at != std::string::npos; at = shown.find("\r\n", at + 2)) {
        shown.replace(at, 2, "\\r\\n");
    }
    EXPECT_EQ(result.status, Status::bad) << shown;
    EXPECT_NE(result.error.find(why), std::string::npos) << "error: " << result.error << " for: " << shown;
}

TEST(RequestHead, ReadsAnOrdinaryRequest) {
    const std::string text =
        "PUT /repos/o/r/pulls/7/merge HTTP/1.1\r\nHost: api.github.com\r\nContent-Type: application/json\r\n"
        "Content-Length: 24\r\nAuthorization: token agent-secret\r\n\r\n{\"merge_method\":\"squash\"}";
    const HeadResult result = parse(text);
    ASSERT_EQ(result.status, Status::ok) << result.error;
    EXPECT_EQ(result.consumed, text.find("\r\n\r\n") + 4);
    EXPECT_EQ(result.head.method, "PUT");
    EXPECT_EQ(result.head.target, "/repos/o/r/pulls/7/merge");
    EXPECT_EQ(result.head.host, "api.github.com");
    EXPECT_EQ(result.head.content_type, "application/json");
    EXPECT_EQ(result.head.content_length, 24U);
    EXPECT_FALSE(result.head.chunked);
    EXPECT_TRUE(result.head.keep_alive);
}

TEST(RequestHead, WaitsForTheWholeHeadAndStopsAtItsEnd) {
    EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: x\r\n").status, Status::need_more);
    EXPECT_EQ(parse("").status, Status::need_more);
    // Pipelining: only the first head is consumed; the next request is left.
    const std::string two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nDELETE /b HTTP/1.1\r\nHost: x\r\n\r\n";
    const HeadResult first = parse(two);
    ASSERT_EQ(first.status, Status::ok);
    EXPECT_EQ(first.head.target, "/a");
    const HeadResult second = parse(std::string_view(two).substr(first.consumed));
    ASSERT_EQ(second.status, Status::ok);
    EXPECT_EQ(second.head.method, "DELETE");
}

TEST(RequestHead, ReadsChunkedUpgradesContinueAndOverrides) {
    const HeadResult chunked = parse("POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
    ASSERT_EQ(chunked.status, Status::ok) << chunked.error;
    EXPECT_TRUE(chunked.head.chunked);
    const HeadResult upgrade = parse(
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: "
        "13\r\n\r\n");
    ASSERT_EQ(upgrade.status, Status::ok);
    EXPECT_TRUE(upgrade.head.upgrade);
    const HeadResult expect = parse("PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    ASSERT_EQ(expect.status, Status::ok);
    EXPECT_TRUE(expect.head.expect_continue);
    const HeadResult override_header = parse("POST /r HTTP/1.1\r\nHost: h\r\nX-HTTP-Method-Override: DELETE\r\n\r\n");
    ASSERT_EQ(override_header.status, Status::ok);
    EXPECT_EQ(override_header.head.method_override, "DELETE");
    const HeadResult close = parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    EXPECT_FALSE(close.head.keep_alive);
}

TEST(RequestHead, ReadsProxyForms) {
    const HeadResult connect = parse("CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n");
    ASSERT_EQ(connect.status, Status::ok) << connect.error;
    EXPECT_EQ(connect.head.target, "api.github.com:443");
    const HeadResult absolute = parse("GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n");
    ASSERT_EQ(absolute.status, Status::ok);
    EXPECT_EQ(absolute.head.target, "http://example.com/a?b");
    EXPECT_EQ(parse("GET / HTTP/1.0\r\n\r\n").status, Status::ok);  // HTTP/1.0 needs no Host
}

TEST(RequestHead, RefusesTheSmugglingShapes) {
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
               "Transfer-Encoding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "Content-Length");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "Content-Length");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", "Content-Length");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", "Content-Length");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", "Content-Length");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", "");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "Transfer-Encoding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", "Transfer-Encoding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
               "Transfer-Encoding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n Transfer-Encoding: chunked\r\n\r\n",
               "obsolete line folding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\tc\r\n\r\n", "obsolete line folding");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n", "malformed");
    expect_bad("GET / HTTP/1.1\nHost: h\n\n", "without CR");
    expect_bad("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "without CR");
}

TEST(RequestHead, RefusesWhatItCannotForwardSafely) {
    expect_bad("GET / HTTP/1.1\r\n\r\n", "without a Host");
    expect_bad("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host");
    expect_bad("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "");
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", "Expect");
    expect_bad("POST / HTTP/1.1\r\nHost: h\r\nX-HTTP-Method-Override: GET\r\nX-Method-Override: DELETE\r\n\r\n",
               "conflicting method override");
    const char with_nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    expect_bad(std::string_view(with_nul, sizeof with_nul - 1), "");
    expect_bad("G E T / HTTP/1.1\r\nHost: h\r\n\r\n", "malformed");
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(20000, 'a') + "\r\n\r\n", "larger than");
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(20000, 'a'), "larger than");  // no end in sight
}

// curl's own request, read from a loopback socket.
TEST(RequestHead, ReadsARequestCurlSends) {
    const testing::LoopbackListener listener;
    const std::string port = listener.port_text();
    testing::Subprocess curl({"/usr/bin/curl", "--silent", "--max-time", "10", "-X", "PATCH", "-H",
                              "Content-Type: application/json", "--data", R"({"state":"closed"})", "--resolve",
                              "api.github.com:" + port + ":127.0.0.1",
                              "http://api.github.com:" + port + "/repos/o/r/pulls/7"});
    const int connection = listener.accept();
    ASSERT_GE(connection, 0) << "curl did not connect";
    std::string received;
    HeadResult result;
    while (result.status == Status::need_more) {
        char buffer[4096];
        pollfd data{connection, POLLIN, 0};
        ASSERT_EQ(::poll(&data, 1, 10000), 1);
        const ssize_t n = ::recv(connection, buffer, sizeof buffer, 0);
        ASSERT_GT(n, 0);
        received.append(buffer, static_cast<std::size_t>(n));
        result = parse(received);
    }
    ASSERT_EQ(result.status, Status::ok) << result.error;
    EXPECT_EQ(result.head.method, "PATCH");
    EXPECT_EQ(result.head.target, "/repos/o/r/pulls/7");
    EXPECT_EQ(result.head.host, "api.github.com:" + port);
    EXPECT_EQ(result.head.content_length, 18U);
    const std::string response = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    ::send(connection, response.data(), response.size(), MSG_NOSIGNAL);
    ::close(connection);
    EXPECT_EQ(curl.wait(), 0);
}

}  // namespace
}  // namespace tameflare::proxy
