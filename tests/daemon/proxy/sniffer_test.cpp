// Protocol detection on real first bytes: ClientHellos made by OpenSSL's
// client and by curl, HTTP request lines, and bytes that are neither.
#include "daemon/proxy/sniffer.h"
#include "support/loopback.h"
#include "support/subprocess.h"

#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace tameflare::proxy {
namespace {

using Bytes = std::vector<std::uint8_t>;

struct ClientOptions {
    std::string server_name;
    std::vector<std::string> alpn;
    int max_version = 0;  // 0: the library's highest
};

// The first flight of a real OpenSSL client, captured through memory BIOs.
Bytes client_hello(const ClientOptions& options) {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    if (options.max_version) SSL_CTX_set_max_proto_version(ctx.get(), options.max_version);
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl.get(), in, out);
    SSL_set_connect_state(ssl.get());
    if (!options.server_name.empty()) SSL_set_tlsext_host_name(ssl.get(), options.server_name.c_str());
    if (!options.alpn.empty()) {
        std::string wire;
        for (const auto& protocol : options.alpn) wire += static_cast<char>(protocol.size()) + protocol;
        SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    }
    EXPECT_EQ(SSL_get_error(ssl.get(), SSL_do_handshake(ssl.get())), SSL_ERROR_WANT_READ);
    char* data = nullptr;
    const long size = BIO_get_mem_data(out, &data);
    return Bytes(data, data + size);
}

Bytes text(std::string_view s) {
    return Bytes(s.begin(), s.end());
}

TEST(Sniffer, ReadsServerNameAndAlpnFromAnOpenSslClientHello) {
    const Bytes hello = client_hello({"api.github.com", {"h2", "http/1.1"}});
    const Sniffed sniffed = sniff(hello);
    EXPECT_EQ(sniffed.protocol, Protocol::tls) << sniffed.error;
    EXPECT_EQ(sniffed.server_name, "api.github.com");
    EXPECT_EQ(sniffed.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
}

TEST(Sniffer, ReadsTls12ClientHellosToo) {
    const Sniffed sniffed = sniff(client_hello({"example.com", {}, TLS1_2_VERSION}));
    EXPECT_EQ(sniffed.protocol, Protocol::tls);
    EXPECT_EQ(sniffed.server_name, "example.com");
    EXPECT_TRUE(sniffed.alpn.empty());
}

TEST(Sniffer, ReportsAMissingServerNameAsEmpty) {
    const Sniffed sniffed = sniff(client_hello({}));
    EXPECT_EQ(sniffed.protocol, Protocol::tls);
    EXPECT_EQ(sniffed.server_name, "");
}

TEST(Sniffer, LowerCasesTheServerName) {
    EXPECT_EQ(sniff(client_hello({"API.GitHub.COM"})).server_name, "api.github.com");
}

TEST(Sniffer, AsksForMoreUntilTheWholeClientHelloIsThere) {
    const Bytes hello = client_hello({"api.openai.com", {"http/1.1"}});
    for (std::size_t size = 1; size < hello.size(); ++size) {
        ASSERT_EQ(sniff(std::span(hello).first(size)).protocol, Protocol::need_more) << "at " << size << " bytes";
    }
    EXPECT_EQ(sniff(hello).protocol, Protocol::tls);
    EXPECT_EQ(sniff({}).protocol, Protocol::need_more);
}

TEST(Sniffer, RefusesARecordThatIsNotAClientHello) {
    Bytes garbage{0x16, 0x03, 0x01, 0x00, 0x08, 0x02, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef};  // a ServerHello
    const Sniffed sniffed = sniff(garbage);
    EXPECT_EQ(sniffed.protocol, Protocol::bad_tls);
    EXPECT_FALSE(sniffed.error.empty());
    Bytes corrupted = client_hello({"api.github.com"});
    corrupted[9] ^= 0xff;  // inside the handshake header's version
    corrupted[43] = 0xff;  // session id length beyond the message
    EXPECT_EQ(sniff(corrupted).protocol, Protocol::bad_tls);
}

TEST(Sniffer, RefusesAClientHelloThatNeverEnds) {
    Bytes huge{0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff};  // claims a 64 KiB handshake message
    huge.resize(kMaxClientHelloBytes + 100, 0);
    EXPECT_EQ(sniff(huge).protocol, Protocol::bad_tls);
}

TEST(Sniffer, TellsHttpRequestLinesFromOtherBytes) {
    EXPECT_EQ(sniff(text("GET / HTTP/1.1\r\nHost: x\r\n\r\n")).protocol, Protocol::http);
    EXPECT_EQ(sniff(text("CONNECT api.github.com:443 HTTP/1.1\r\n")).protocol, Protocol::http);
    EXPECT_EQ(sniff(text("PROPFIND ")).protocol, Protocol::http);
    EXPECT_EQ(sniff(text("GE")).protocol, Protocol::need_more);
    EXPECT_EQ(sniff(text("SSH-2.0-OpenSSH_9.2\r\n")).protocol, Protocol::other);
    EXPECT_EQ(sniff(text("get / HTTP/1.1\r\n")).protocol, Protocol::other);
    EXPECT_EQ(sniff(text(" GET /")).protocol, Protocol::other);
    EXPECT_EQ(sniff(Bytes{0x16, 0x01, 0x00}).protocol, Protocol::other);  // 0x16 but no TLS version
    EXPECT_EQ(sniff(Bytes{0x00, 0x00, 0x00, 0x01}).protocol, Protocol::other);
}

// A real client over a real socket: curl's ClientHello, read with MSG_PEEK
// the way the proxy will, so the bytes are still there afterwards.
TEST(Sniffer, ReadsCurlsClientHelloWithoutConsumingIt) {
    const testing::LoopbackListener listener;
    testing::Subprocess curl({"/usr/bin/curl", "--silent", "--max-time", "10", "--connect-to",
                              "api.github.com:443:127.0.0.1:" + listener.port_text(), "https://api.github.com/zen"});
    const int connection = listener.accept();
    ASSERT_GE(connection, 0) << "curl did not connect";

    Sniffed sniffed;
    Bytes buffer(kMaxClientHelloBytes);
    for (int round = 0; round < 100 && sniffed.protocol == Protocol::need_more; ++round) {
        pollfd data{connection, POLLIN, 0};
        ASSERT_EQ(::poll(&data, 1, 10000), 1);
        const ssize_t peeked = ::recv(connection, buffer.data(), buffer.size(), MSG_PEEK);
        ASSERT_GT(peeked, 0);
        sniffed = sniff(std::span(buffer).first(static_cast<std::size_t>(peeked)));
        if (sniffed.protocol == Protocol::need_more) ::usleep(10000);
    }
    EXPECT_EQ(sniffed.protocol, Protocol::tls) << sniffed.error;
    EXPECT_EQ(sniffed.server_name, "api.github.com");
    EXPECT_NE(std::find(sniffed.alpn.begin(), sniffed.alpn.end(), "http/1.1"), sniffed.alpn.end());
    // Peeking consumed nothing: the first byte is still the record type.
    std::uint8_t first = 0;
    EXPECT_EQ(::recv(connection, &first, 1, 0), 1);
    EXPECT_EQ(first, 0x16);
    ::close(connection);
    EXPECT_NE(curl.wait(), 0);  // curl gets no ServerHello and gives up
}

}  // namespace
}  // namespace tameflare::proxy
