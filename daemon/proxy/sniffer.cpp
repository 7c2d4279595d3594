#include "daemon/proxy/sniffer.h"

#include "daemon/proxy/openssl_handles.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <algorithm>
#include <memory>

namespace tameflare::proxy {

namespace {

struct Capture {
    Sniffed* out = nullptr;
    bool seen = false;
};

// The server_name extension's body (RFC 6066): a list of (type, name); we
// take the host_name entry. OpenSSL hands us the raw extension, and its own
// SNI accessors are not filled in yet at this point of the handshake.
void read_server_name(const unsigned char* data, std::size_t size, Sniffed& out) {
    if (size < 2) return;
    std::size_t list = (static_cast<std::size_t>(data[0]) << 8) | data[1];
    std::size_t pos = 2;
    list = std::min(list + 2, size);
    while (pos + 3 <= list) {
        const unsigned type = data[pos];
        const std::size_t length = (static_cast<std::size_t>(data[pos + 1]) << 8) | data[pos + 2];
        pos += 3;
        if (pos + length > list) return;
        if (type == TLSEXT_NAMETYPE_host_name) {
            out.server_name.assign(reinterpret_cast<const char*>(data + pos), length);
            std::transform(out.server_name.begin(), out.server_name.end(), out.server_name.begin(),
                           [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; });
            return;
        }
        pos += length;
    }
}

// ALPN (RFC 7301): a list of length-prefixed protocol names.
void read_alpn(const unsigned char* data, std::size_t size, Sniffed& out) {
    if (size < 2) return;
    const std::size_t list = std::min((static_cast<std::size_t>(data[0]) << 8 | data[1]) + 2, size);
    std::size_t pos = 2;
    while (pos < list) {
        const std::size_t length = data[pos++];
        if (length == 0 || pos + length > list) return;
        out.alpn.emplace_back(reinterpret_cast<const char*>(data + pos), length);
        pos += length;
    }
}

int on_client_hello(SSL* ssl, int* alert, void* /*arg*/) {
    auto* capture = static_cast<Capture*>(SSL_get_app_data(ssl));
    capture->seen = true;
    const unsigned char* data = nullptr;
    std::size_t size = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &data, &size) == 1) {
        read_server_name(data, size, *capture->out);
    }
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &size) == 1) {
        read_alpn(data, size, *capture->out);
    }
    // Stop here: we only wanted to read the hello, not to answer it.
    *alert = SSL_AD_HANDSHAKE_FAILURE;
    return SSL_CLIENT_HELLO_RETRY;
}

const SSL_CTX* server_context() {
    static const SslCtxPtr ctx = [] {
        SslCtxPtr made(SSL_CTX_new(TLS_server_method()));
        if (made) {
            SSL_CTX_set_min_proto_version(made.get(), TLS1_VERSION);
            SSL_CTX_set_client_hello_cb(made.get(), on_client_hello, nullptr);
        }
        return made;
    }();
    return ctx.get();
}

Sniffed sniff_tls(std::span<const std::uint8_t> bytes) {
    Sniffed result;
    Capture capture{&result};
    // SSL_new takes a non-const context; it only adds a reference.
    SslPtr ssl(SSL_new(const_cast<SSL_CTX*>(server_context())));
    BIO* in = BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
    BIO* out = BIO_new(BIO_s_mem());
    if (!ssl || !in || !out) {
        BIO_free(in);
        BIO_free(out);
        result.protocol = Protocol::bad_tls;
        result.error = "out of memory";
        return result;
    }
    BIO_set_mem_eof_return(in, -1);   // running out of bytes means "wait", not "closed"
    SSL_set_bio(ssl.get(), in, out);  // the SSL owns both BIOs from here
    SSL_set_accept_state(ssl.get());
    // The callback is set once on the shared context; what it captures goes
    // to this call's result through the SSL's app data.
    SSL_set_app_data(ssl.get(), &capture);
    const int rc = SSL_do_handshake(ssl.get());
    const int error = SSL_get_error(ssl.get(), rc);
    ERR_clear_error();
    if (capture.seen) {
        result.protocol = Protocol::tls;
    } else if (error == SSL_ERROR_WANT_READ) {
        result.protocol = bytes.size() >= kMaxClientHelloBytes ? Protocol::bad_tls : Protocol::need_more;
        if (result.protocol == Protocol::bad_tls) result.error = "ClientHello larger than 16 KiB";
    } else {
        result.protocol = Protocol::bad_tls;
        result.error = "not a TLS ClientHello";
    }
    return result;
}

bool is_token_char(std::uint8_t c) {
    return c >= 'A' && c <= 'Z';
}

}  // namespace

Sniffed sniff(std::span<const std::uint8_t> bytes) {
    if (bytes.empty()) return {};
    if (bytes[0] == 0x16) {  // TLS handshake record
        if (bytes.size() >= 2 && bytes[1] != 0x03) return {Protocol::other, {}, {}, {}};
        return sniff_tls(bytes);
    }
    // An HTTP/1.x request starts with an upper-case method token and a space.
    // Beast parses the request itself afterwards; this only tells it is one.
    std::size_t i = 0;
    while (i < bytes.size() && i < 24 && is_token_char(bytes[i])) ++i;
    if (i == bytes.size() && i < 24) return {};
    if (i > 0 && i < bytes.size() && bytes[i] == ' ') return {Protocol::http, {}, {}, {}};
    return {Protocol::other, {}, {}, {}};
}

}  // namespace tameflare::proxy
