// The loopback upstream and test CA, checked with real clients: curl, a raw
// socket for pipelining, and Beast's WebSocket client.
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"
#include "tests/support/test_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <sstream>

namespace tameflare::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// curl without ~/.curlrc or proxy variables; -w output and the body on stdout.
std::vector<std::string> curl_argv(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env", "curl", "-q",         "--silent", "--show-error",
                                  "--noproxy",    "*",    "--max-time", "20"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}
Result curl(std::vector<std::string> args) {
    return run(curl_argv(std::move(args)));
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> result;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
}

std::string header(const SeenRequest& request, const std::string& name) {
    for (const auto& [key, value] : request.headers) {
        if (key == name) return value;
    }
    return "";
}

TEST(TestUpstream, EchoesRequestsOnOneKeptAliveConnection) {
    TestUpstream upstream;
    const Result result = curl({"-w", "\n%header{x-upstream}\n", "-H", "X-Test: one", "-H", "X-Test: two",
                                upstream.url("/a?x=1"), upstream.url("/b")});
    ASSERT_EQ(result.status, 0) << result.err;
    const auto output = lines(result.out);
    ASSERT_EQ(output.size(), 4u) << result.out;
    const auto first = nlohmann::json::parse(output[0]);
    EXPECT_EQ(first["method"], "GET");
    EXPECT_EQ(first["target"], "/a?x=1");
    EXPECT_EQ(first["headers"]["x-test"], "two");
    EXPECT_EQ(first["body_bytes"], 0);
    EXPECT_EQ(output[1], "test");
    EXPECT_EQ(nlohmann::json::parse(output[2])["target"], "/b");

    ASSERT_TRUE(upstream.wait_for_requests(2, 1s));
    EXPECT_EQ(upstream.connections_accepted(), 1u);
    const auto seen = upstream.requests();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].target, "/a?x=1");
    EXPECT_EQ(seen[1].target, "/b");
    EXPECT_FALSE(seen[0].tls);
    EXPECT_EQ(seen[0].connection, seen[1].connection);
    std::vector<std::string> tests;
    for (const auto& [name, value] : seen[0].headers) {
        if (name == "X-Test") tests.push_back(value);
    }
    EXPECT_EQ(tests, (std::vector<std::string>{"one", "two"}));
    upstream.clear();
    EXPECT_TRUE(upstream.requests().empty());
    EXPECT_EQ(upstream.connections_accepted(), 0u);
}

TEST(TestUpstream, AnswersPipelinedRequestsInOrderAndClosesOnConnectionClose) {
    TestUpstream upstream;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(upstream.port());
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    const timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    const std::string requests =
        "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        "GET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(::send(fd, requests.data(), requests.size(), MSG_NOSIGNAL), static_cast<ssize_t>(requests.size()));
    std::string responses;
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) responses.append(buffer, n);
    ::close(fd);
    const auto first = responses.find("\"target\":\"/first\"");
    const auto second = responses.find("\"target\":\"/second\"");
    const auto third = responses.find("\"target\":\"/third\"");
    ASSERT_NE(third, std::string::npos) << responses;  // and the server closed: recv returned 0
    EXPECT_LT(first, second);
    EXPECT_LT(second, third);
    EXPECT_NE(responses.find("Connection: close"), std::string::npos);
    ASSERT_EQ(upstream.requests().size(), 3u);
    EXPECT_EQ(upstream.requests()[1].body, "abc");
}

TEST(TestUpstream, ServesItsRoutes) {
    TestUpstream upstream;
    const std::vector<std::string> quiet{"-o", "/dev/null", "-w", "%{http_code} %{size_download}"};
    auto fetch = [&](const std::string& path) {
        auto args = quiet;
        args.push_back(upstream.url(path));
        return curl(args).out;
    };
    EXPECT_EQ(fetch("/status/418"), "418 14");
    EXPECT_EQ(fetch("/status/204"), "204 0");
    EXPECT_EQ(fetch("/bytes?n=100000"), "200 100000");
    const auto started = Clock::now();
    EXPECT_EQ(fetch("/slow?ms=300").substr(0, 4), "200 ");
    EXPECT_GE(Clock::now() - started, 300ms);

    const Result chunked = curl({"-D", "-", upstream.url("/chunked?n=3")});
    EXPECT_NE(chunked.out.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << chunked.out;
    EXPECT_TRUE(chunked.out.ends_with("\r\n\r\nchunk 0\nchunk 1\nchunk 2\n")) << chunked.out;

    upstream.clear();
    EXPECT_EQ(curl({"-o", "/dev/null", "-o", "/dev/null", upstream.url("/close"), upstream.url("/")}).status, 0);
    EXPECT_EQ(upstream.connections_accepted(), 2u);
}

TEST(TestUpstream, AnswersExpectContinueBeforeReadingTheBody) {
    TestUpstream upstream;
    const Result result = curl({"-v", "-H", "Expect: 100-continue", "--data-binary", "hello", upstream.url("/upload")});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.err.find("HTTP/1.1 100 Continue"), std::string::npos) << result.err;
    EXPECT_EQ(nlohmann::json::parse(result.out)["body"], "hello");
    ASSERT_EQ(curl({"-H", "Expect:", "--data-binary", "again", upstream.url("/upload")}).status, 0);
    const auto seen = upstream.requests();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].method, "POST");
    EXPECT_EQ(seen[0].body, "hello");
    EXPECT_TRUE(seen[0].sent_continue);
    EXPECT_FALSE(seen[1].sent_continue);
}

TEST(TestUpstream, StreamsServerSentEventsAsTheyAreWritten) {
    TestUpstream upstream;
    // The body goes to stderr, which Subprocess lets us watch as it arrives.
    Subprocess client(
        curl_argv({"-N", "-o", "/dev/stderr", "-w", "%{content_type}", upstream.url("/sse?n=3&interval_ms=300")}));
    ASSERT_TRUE(client.wait_for_stderr("data: 0\n\n"));
    const auto first = Clock::now();
    ASSERT_TRUE(client.wait_for_stderr("data: 2\n\n"));
    EXPECT_GE(Clock::now() - first, 450ms);
    EXPECT_EQ(client.wait(), 0);
    EXPECT_EQ(client.out(), "text/event-stream");
    EXPECT_EQ(client.err(), "data: 0\n\ndata: 1\n\ndata: 2\n\n");
}

TEST(TestUpstream, ServesHttpsWithACertificateFromTheTestCa) {
    TempDir dir;
    TestCa ca(dir.path());
    TestUpstream upstream({.tls = ca.issue({"upstream.test"}, {"127.0.0.1"}, dir.path(), "upstream")});
    const std::string port = std::to_string(upstream.port());
    const Result by_name = curl({"--cacert", ca.ca_file().string(), "--resolve", "upstream.test:" + port + ":127.0.0.1",
                                 "https://upstream.test:" + port + "/hello"});
    ASSERT_EQ(by_name.status, 0) << by_name.err;
    EXPECT_EQ(nlohmann::json::parse(by_name.out)["target"], "/hello");
    const Result by_ip = curl({"--cacert", ca.ca_file().string(), upstream.url("/ip")});
    ASSERT_EQ(by_ip.status, 0) << by_ip.err;
    const auto seen = upstream.requests();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_TRUE(seen[0].tls);
    EXPECT_EQ(seen[0].sni, "upstream.test");
    EXPECT_EQ(seen[1].sni, "");  // no SNI for an IP literal
}

TEST(TestUpstream, ASelfSignedCertificateIsNotTrusted) {
    TempDir dir;
    TestCa ca(dir.path());
    TestUpstream upstream({.tls = TestCa::self_signed({"upstream.test"}, {"127.0.0.1"}, dir.path(), "untrusted")});
    const std::string port = std::to_string(upstream.port());
    const Result result = curl({"--cacert", ca.ca_file().string(), "--resolve", "upstream.test:" + port + ":127.0.0.1",
                                "https://upstream.test:" + port + "/"});
    EXPECT_EQ(result.status, 60) << result.err;  // CURLE_PEER_FAILED_VERIFICATION
    EXPECT_TRUE(upstream.requests().empty());
}

void expect_echo(auto& socket, const std::string& host) {
    socket.handshake(host, "/ws");
    beast::flat_buffer buffer;
    socket.text(true);
    socket.write(asio::buffer(std::string("hello")));
    socket.read(buffer);
    EXPECT_TRUE(socket.got_text());
    EXPECT_EQ(beast::buffers_to_string(buffer.data()), "hello");
    buffer.consume(buffer.size());
    socket.binary(true);
    socket.write(asio::buffer(std::string("\0\1\2", 3)));
    socket.read(buffer);
    EXPECT_FALSE(socket.got_text());
    EXPECT_EQ(beast::buffers_to_string(buffer.data()), std::string("\0\1\2", 3));
    socket.close(websocket::close_code::normal);
}

TEST(TestUpstream, EchoesWebSocketMessages) {
    TestUpstream upstream;
    asio::io_context io;
    websocket::stream<tcp::socket> socket(io);
    socket.next_layer().connect({asio::ip::make_address("127.0.0.1"), upstream.port()});
    expect_echo(socket, "127.0.0.1");
    ASSERT_EQ(upstream.requests().size(), 1u);
    EXPECT_EQ(upstream.requests()[0].target, "/ws");
    EXPECT_EQ(header(upstream.requests()[0], "Upgrade"), "websocket");

    TestUpstream plain({.websocket = false});
    websocket::stream<tcp::socket> refused(io);
    refused.next_layer().connect({asio::ip::make_address("127.0.0.1"), plain.port()});
    EXPECT_THROW(refused.handshake("127.0.0.1", "/ws"), boost::system::system_error);
}

TEST(TestUpstream, EchoesWebSocketMessagesOverTlsWithAlpn) {
    TempDir dir;
    TestCa ca(dir.path());
    TestUpstream upstream({.tls = ca.issue({"upstream.test"}, {}, dir.path(), "upstream")});
    asio::ssl::context context(asio::ssl::context::tls_client);
    context.load_verify_file(ca.ca_file().string());
    context.set_verify_mode(asio::ssl::verify_peer);
    const unsigned char protocols[] = "\x02h2\x08http/1.1";
    SSL_CTX_set_alpn_protos(context.native_handle(), protocols, sizeof protocols - 1);
    asio::io_context io;
    websocket::stream<asio::ssl::stream<tcp::socket>> socket(io, context);
    SSL_set_tlsext_host_name(socket.next_layer().native_handle(), "upstream.test");
    socket.next_layer().set_verify_callback(asio::ssl::host_name_verification("upstream.test"));
    beast::get_lowest_layer(socket).connect({asio::ip::make_address("127.0.0.1"), upstream.port()});
    socket.next_layer().handshake(asio::ssl::stream_base::client);
    const unsigned char* alpn = nullptr;
    unsigned int alpn_length = 0;
    SSL_get0_alpn_selected(socket.next_layer().native_handle(), &alpn, &alpn_length);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(alpn), alpn_length), "http/1.1");
    expect_echo(socket, "upstream.test");
    ASSERT_EQ(upstream.requests().size(), 1u);
    EXPECT_EQ(upstream.requests()[0].sni, "upstream.test");
}

TEST(TestUpstream, ListensOnOtherLoopbackAddresses) {
    TestUpstream second({.address = "127.0.0.2"});
    EXPECT_EQ(second.url("/x"), "http://127.0.0.2:" + std::to_string(second.port()) + "/x");
    EXPECT_EQ(curl({"-o", "/dev/null", second.url("/x")}).status, 0);
    EXPECT_EQ(second.requests().size(), 1u);
    std::optional<TestUpstream> v6;
    try {
        v6.emplace(TestUpstream::Options{.address = "::1"});
    } catch (const std::exception& error) {
        GTEST_SKIP() << "no IPv6 loopback: " << error.what();
    }
    EXPECT_EQ(curl({"-g", "-o", "/dev/null", v6->url("/y")}).status, 0);
    EXPECT_EQ(v6->requests().size(), 1u);
}

TEST(TestUpstream, ClosesOpenConnectionsWhenDestroyed) {
    std::optional<TestUpstream> upstream(std::in_place);
    Subprocess client(curl_argv({upstream->url("/slow?ms=30000")}));
    ASSERT_TRUE(upstream->wait_for_requests(1));
    const auto started = Clock::now();
    upstream.reset();
    EXPECT_LT(Clock::now() - started, 1s);
    EXPECT_NE(client.wait(), 0);  // the reply never came
}

}  // namespace
}  // namespace tameflare::testing
