// The one way upstream, for HTTP requests and tunnels alike.
#include "daemon/proxy/server_internal.h"

namespace tameflare::proxy::detail {

net::awaitable<std::variant<std::vector<IpAddress>, stage::DestinationRefusal>> Dialer::agree(
    const std::string& host, const std::optional<Endpoint>& dialed) const {
    auto resolved = co_await impl_.resolver.resolve(host);
    co_return stage::agree_destination(host, std::move(resolved),
                                       dialed ? std::optional<IpAddress>(dialed->address) : std::nullopt,
                                       impl_.options.allowed_upstreams);
}

std::vector<IpAddress> Dialer::reachable(std::vector<IpAddress> addresses) const {
    std::erase_if(addresses, [&](const IpAddress& a) { return !upstream_allowed(a, impl_.options.allowed_upstreams); });
    return addresses;
}

net::awaitable<error_code> Dialer::connect(beast::tcp_stream& stream, const std::vector<IpAddress>& addresses,
                                           std::uint16_t port) const {
    error_code error = net::error::host_not_found;
    for (const auto& address : addresses) {
        stream.expires_after(std::chrono::seconds(10));
        co_await stream.async_connect(to_asio(Endpoint{address, port}), net::redirect_error(kToken, error));
        if (!error) break;
    }
    if (!error) {
        error_code ignored;
        stream.socket().set_option(tcp::no_delay(true), ignored);
    }
    co_return error;
}

net::awaitable<std::string> Dialer::handshake(TlsStream& stream, const std::string& host) const {
    SSL* ssl = stream.native_handle();
    const bool literal = IpAddress::parse(host).has_value();
    if (!literal) SSL_set_tlsext_host_name(ssl, host.c_str());
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (literal) {
        X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
        X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    }
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
    error_code error;
    co_await stream.async_handshake(net::ssl::stream_base::client, net::redirect_error(kToken, error));
    if (!error) co_return std::string();
    const long verify = SSL_get_verify_result(ssl);
    co_return verify != X509_V_OK
        ? "upstream certificate of " + host + " failed verification: " + X509_verify_cert_error_string(verify)
        : "TLS handshake with " + host + " failed: " + error.message();
}

}  // namespace tameflare::proxy::detail
