#include "daemon/proxy/stage/request_gate.h"

#include "common/text.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>

namespace tameflare::proxy::stage {

namespace {

std::string sha256_hex(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < length; ++i) {
        out += kHex[digest[i] >> 4];
        out += kHex[digest[i] & 15];
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.empty() || text.size() % 4 != 0 || text.size() > 4096) return std::nullopt;
    std::string out(text.size() / 4 * 3, '\0');
    const int length =
        EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                        reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (length < 0) return std::nullopt;
    std::size_t size = static_cast<std::size_t>(length);
    for (auto it = text.rbegin(); it != text.rend() && *it == '='; ++it) --size;  // EVP_DecodeBlock keeps padding
    out.resize(size);
    return out;
}

Refusal bad_request(std::string reason, std::string hint = {}) {
    return Refusal{400, "bad_request", std::move(hint), std::move(reason), {}, {}};
}

Refusal forbidden(std::string reason, std::string host = {}) {
    return Refusal{403, "", "", std::move(reason), {}, std::move(host)};
}

// The explicit proxy's absolute-form target, rewritten to origin-form.
std::variant<Target, Refusal> absolute_form(const RequestFacts& request, const std::optional<HostPort>& host) {
    constexpr std::string_view kScheme = "http://";
    if (!ascii_lower(request.target.substr(0, kScheme.size())).starts_with(kScheme)) {
        return bad_request("the explicit proxy takes absolute-form http:// targets and CONNECT",
                           "use CONNECT host:443 for HTTPS");
    }
    const std::string_view rest = request.target.substr(kScheme.size());
    const auto slash = rest.find_first_of("/?");
    const auto authority = split_host_port(rest.substr(0, slash));
    std::string path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
    if (path.front() == '?') path.insert(0, "/");
    if (!authority || (host && host->host != authority->host)) {
        return forbidden("the Host header does not match the request target");
    }
    return Target{authority->host, authority->port.value_or(80), std::move(path), true};
}

}  // namespace

std::optional<HostPort> split_host_port(std::string_view text) {
    HostPort out;
    std::string_view port;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        out.host = ascii_lower(text.substr(1, close - 1));
        const auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port = rest.substr(1);
        }
    } else {
        const auto colon = text.rfind(':');
        if (colon != std::string_view::npos) {
            if (text.find(':') != colon) return std::nullopt;  // a bare IPv6 address
            port = text.substr(colon + 1);
            text = text.substr(0, colon);
        }
        out.host = ascii_lower(text);
    }
    if (out.host.empty()) return std::nullopt;
    if (port.data() != nullptr) {
        if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos) {
            return std::nullopt;
        }
        const unsigned value = std::stoul(std::string(port));
        if (value == 0 || value > 65535) return std::nullopt;
        out.port = static_cast<std::uint16_t>(value);
    }
    return out;
}

std::variant<Target, Refusal> gate_request(const ConnectionFacts& connection, const RequestFacts& request) {
    const std::optional<HostPort> host = split_host_port(request.host);
    Target target;
    if (connection.mode == Mode::explicit_plain) {
        auto rewritten = absolute_form(request, host);
        if (auto* refusal = std::get_if<Refusal>(&rewritten)) return std::move(*refusal);
        target = std::move(std::get<Target>(rewritten));
    } else if (!request.target.starts_with('/') && !(request.target == "*" && request.method == "OPTIONS")) {
        return bad_request("request target must be origin-form (/path)");
    } else if (!host) {
        return bad_request("missing or invalid Host header", "send Host: <name>");
    } else {
        target = Target{host->host, connection.port, std::string(request.target), false};
        // The Host header names the destination: the name the connection was
        // verified for, and the port the agent dialed.
        if (!connection.verified_name.empty() && host->host != connection.verified_name) {
            return forbidden("Host \"" + host->host + "\" does not match the " +
                                 (connection.mode == Mode::explicit_tunnel && !connection.tls ? "CONNECT target"
                                                                                              : "TLS server name") +
                                 " \"" + std::string(connection.verified_name) + "\"",
                             host->host);
        }
        if (host->port && *host->port != connection.port) {
            return forbidden("Host port " + std::to_string(*host->port) + " does not match the destination port " +
                                 std::to_string(connection.port),
                             host->host);
        }
    }
    return target;
}

std::variant<std::string, Refusal> explicit_login(const policy::Config& config,
                                                  std::optional<std::string_view> proxy_authorization,
                                                  std::string_view bound_gateway) {
    Refusal refusal{407,
                    "proxy_authentication_required",
                    "send Proxy-Authorization: Basic base64(<gateway>:<token>), e.g. curl -x "
                    "http://<gateway>:<token>@host:port",
                    "",
                    {{"Proxy-Authenticate", "Basic realm=\"tameflare\""}},
                    {}};
    const auto refuse = [&](std::string reason) {
        refusal.reason = std::move(reason);
        return refusal;
    };
    if (!proxy_authorization) return refuse("the explicit proxy needs Proxy-Authorization naming a gateway");
    const std::string_view value = *proxy_authorization;
    const auto space = value.find(' ');
    if (space == std::string_view::npos || ascii_lower(value.substr(0, space)) != "basic") {
        return refuse("Proxy-Authorization must use the Basic scheme");
    }
    auto decoded = base64_decode(value.substr(space + 1));
    const auto colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) return refuse("Proxy-Authorization is not base64 of <gateway>:<token>");
    std::string name = decoded->substr(0, colon);
    const auto* gateway = config.gateway(name);
    std::string& secret = *decoded;
    const std::string presented = sha256_hex(std::string_view(secret).substr(colon + 1));
    OPENSSL_cleanse(&secret.front(), secret.size());  // never empty: it holds the colon
    if (gateway == nullptr || gateway->proxy_token_sha256.size() != presented.size() ||
        CRYPTO_memcmp(gateway->proxy_token_sha256.data(), presented.data(), presented.size()) != 0) {
        return refuse("unknown gateway or wrong token in Proxy-Authorization");
    }
    if (!bound_gateway.empty() && name != bound_gateway) return refuse("one connection may not switch gateways");
    return name;
}

std::variant<TunnelTarget, Refusal> gate_connect(std::string_view target, std::size_t bytes_before_reply) {
    const auto parsed = split_host_port(target);
    if (!parsed || !parsed->port || bytes_before_reply != 0) {
        Refusal refusal = bad_request("CONNECT needs host:port and nothing sent before the reply");
        refusal.host = parsed ? parsed->host : "";
        return refusal;
    }
    return TunnelTarget{parsed->host, *parsed->port};
}

}  // namespace tameflare::proxy::stage
