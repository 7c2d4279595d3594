#include "bench/peers/loadgen_options.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/http.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <system_error>

namespace tameflare::loadgen {

namespace {

constexpr unsigned kMaxConnections = 100'000;
constexpr double kMaxSeconds = 7 * 24 * 3600.0;

[[noreturn]] void bad_value(std::string_view flag, std::string_view value, std::string_view expected) {
    throw UsageError(std::string(flag) + ": '" + std::string(value) + "' is not valid; expected " +
                     std::string(expected));
}

template <typename Integer>
Integer parse_integer(std::string_view flag, std::string_view text, Integer low, Integer high,
                      std::string_view expected) {
    Integer value{};
    const auto* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc{} || stop != end || value < low || value > high) {
        bad_value(flag, text, expected);
    }
    return value;
}

double parse_seconds(std::string_view flag, std::string_view text, bool zero_allowed) {
    double value = 0;
    const auto* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, value);
    const bool fits = !text.empty() && error == std::errc{} && stop == end && std::isfinite(value) &&
                      (zero_allowed ? value >= 0 : value > 0) && value <= kMaxSeconds;
    if (!fits) {
        bad_value(flag, text, zero_allowed ? "seconds, 0 or more (e.g. 2.5)" : "seconds, more than 0 (e.g. 10)");
    }
    return value;
}

// The port of `whole`; errors show all of `whole`.
std::uint16_t parse_port(std::string_view flag, std::string_view whole, std::string_view port) {
    unsigned value = 0;
    const auto* end = port.data() + port.size();
    const auto [stop, error] = std::from_chars(port.data(), end, value);
    if (port.empty() || error != std::errc{} || stop != end || value < 1 || value > 65535) {
        bad_value(flag, whole, "a port from 1 to 65535 after the host");
    }
    return static_cast<std::uint16_t>(value);
}

// A string OpenSSL allocated.
struct OpenSslFree {
    void operator()(char* text) const { OPENSSL_free(text); }
};
using OpenSslString = std::unique_ptr<char, OpenSslFree>;

std::string_view view(const OpenSslString& text) {
    return text ? std::string_view(text.get()) : std::string_view();
}

// The host of an IPv6 literal without its brackets.
std::string unbracketed(std::string_view host) {
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return std::string(host);
}

// "host", "host:port", "[v6]", "[v6]:port", split by OpenSSL (BIO_parse_hostserv).
HostPort parse_host_port(std::string_view flag, std::string_view text, std::optional<std::uint16_t> default_port) {
    const std::string_view expected = default_port ? "ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)" : "HOST:PORT";
    const std::string whole(text);
    char* host = nullptr;
    char* service = nullptr;
    const int parsed = BIO_parse_hostserv(whole.c_str(), &host, &service, BIO_PARSE_PRIO_HOST);
    const OpenSslString owned_host(host), owned_service(service);
    if (parsed != 1 || view(owned_host).empty() || (!owned_service && !default_port)) {
        bad_value(flag, text, expected);
    }
    HostPort out;
    out.host = std::string(view(owned_host));
    out.port = owned_service ? parse_port(flag, text, view(owned_service)) : *default_port;
    return out;
}

// Split by OpenSSL (OSSL_HTTP_parse_url); the scheme must be written out.
Url parse_url(std::string_view text) {
    constexpr std::string_view kFlag = "--url";
    constexpr std::string_view kExpected = "http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH";
    if (!text.starts_with("http://") && !text.starts_with("https://")) bad_value(kFlag, text, kExpected);
    Url url;
    url.text = std::string(text);
    int https = 0;
    int port = 0;
    char *user = nullptr, *host = nullptr, *path = nullptr, *query = nullptr;
    const int parsed =
        OSSL_HTTP_parse_url(url.text.c_str(), &https, &user, &host, nullptr, &port, &path, &query, nullptr);
    const OpenSslString owned_user(user), owned_host(host), owned_path(path), owned_query(query);
    if (parsed != 1 || view(owned_host).empty() || port < 1 || port > 65535) bad_value(kFlag, text, kExpected);
    if (!view(owned_user).empty()) {
        bad_value(kFlag, text, "a URL without user:pass@ (use --proxy-auth for the proxy)");
    }
    url.https = https == 1;
    url.host = unbracketed(view(owned_host));
    url.port = static_cast<std::uint16_t>(port);
    url.target = std::string(view(owned_path));
    if (url.target.empty()) url.target.push_back('/');
    if (!view(owned_query).empty()) {
        url.target.push_back('?');
        url.target.append(view(owned_query));
    }
    for (const char c : url.target) {
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
            bad_value(kFlag, text, "a URL without spaces or control characters (percent-encode them)");
        }
    }
    return url;
}

std::string_view flag_name(std::string_view arg) {
    const auto equals = arg.find('=');
    return equals == std::string_view::npos ? arg : arg.substr(0, equals);
}

}  // namespace

std::string_view mode_name(Mode mode) {
    switch (mode) {
        case Mode::direct: return "direct";
        case Mode::proxy: return "proxy";
        case Mode::idle: return "idle";
    }
    return "?";
}

std::string Url::host_header() const {
    const bool default_port = port == (https ? 443 : 80);
    return default_port ? bracketed_host() : authority();
}

std::string Url::authority() const {
    std::string out = bracketed_host();
    out.push_back(':');
    out.append(std::to_string(port));
    return out;
}

std::string Url::bracketed_host() const {
    if (host.find(':') == std::string::npos) return host;
    std::string out;
    out.reserve(host.size() + 2);
    out.push_back('[');
    out.append(host);
    out.push_back(']');
    return out;
}

std::string_view usage() {
    return "usage: tf_loadgen --mode direct|proxy|idle --url URL [options]\n"
           "  --url URL               http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH; HOST is the\n"
           "                          Host header, the SNI and the name the certificate must match\n"
           "  --mode direct           dial the URL's host (or --connect-to) and send GET PATH\n"
           "  --mode proxy            through --proxy: absolute-form GET for http://, CONNECT then TLS\n"
           "                          for https://\n"
           "  --mode idle             N connections, one request each, then held open and idle; prints\n"
           "                          {\"event\":\"ready\",...} once all have answered (through --proxy if given)\n"
           "  --proxy HOST:PORT       the explicit proxy (proxy mode, optional in idle mode)\n"
           "  --connect-to ADDR[:PORT] dial this address instead of the URL's host (direct and idle modes)\n"
           "  --ca FILE               PEM CA certificates to verify the origin with (default: the system's)\n"
           "  --connections N         concurrent connections, each a closed loop (default 1)\n"
           "  --duration SECONDS      the measured window (default 10)\n"
           "  --warmup SECONDS        requests finished before the window are not counted (default 1)\n"
           "  --new-connection        a new TCP connection (and CONNECT, TLS handshake) per request\n"
           "  --expect-bytes N        only status 200 with exactly N body bytes counts as a success\n"
           "  --hold SECONDS          idle mode: how long to hold the connections (default: until\n"
           "                          SIGTERM or SIGINT)\n"
           "  --proxy-auth USER:PASS  Proxy-Authorization: Basic for the proxy\n"
           "  --max-requests N        stop the window after N successful requests\n"
           "Prints one JSON object on stdout; diagnostics go to stderr.\n";
}

std::optional<Options> parse_options(int argc, char** argv) {
    Options options;
    std::optional<Mode> mode;
    bool have_url = false;
    bool have_duration = false;
    bool have_warmup = false;
    const std::span<char*> args(argv, static_cast<std::size_t>(argc));
    for (std::size_t i = 1; i < args.size(); ++i) {
        const std::string_view arg = args[i];
        if (arg == "--help" || arg == "-h") return std::nullopt;
        if (arg == "--new-connection") {
            options.new_connection = true;
            continue;
        }
        if (!arg.starts_with("--")) throw UsageError("unexpected argument '" + std::string(arg) + "' (see --help)");
        const std::string_view flag = flag_name(arg);
        std::string_view value;
        if (flag.size() < arg.size()) {
            value = arg.substr(flag.size() + 1);
        } else if (i + 1 < args.size()) {
            value = args[++i];
        } else {
            throw UsageError(std::string(flag) + " needs a value (see --help)");
        }
        if (flag == "--mode") {
            if (value == "direct") {
                mode = Mode::direct;
            } else if (value == "proxy") {
                mode = Mode::proxy;
            } else if (value == "idle") {
                mode = Mode::idle;
            } else {
                bad_value(flag, value, "direct, proxy or idle");
            }
        } else if (flag == "--url") {
            options.url = parse_url(value);
            have_url = true;
        } else if (flag == "--proxy") {
            options.proxy = parse_host_port(flag, value, std::nullopt);
        } else if (flag == "--connect-to") {
            options.connect_to = parse_host_port(flag, value, std::uint16_t{0});
        } else if (flag == "--ca") {
            if (value.empty()) bad_value(flag, value, "a PEM file of CA certificates");
            options.ca_file = std::string(value);
        } else if (flag == "--connections") {
            options.connections =
                parse_integer<unsigned>(flag, value, 1, kMaxConnections, "a whole number from 1 to 100000");
        } else if (flag == "--duration") {
            options.duration_s = parse_seconds(flag, value, false);
            have_duration = true;
        } else if (flag == "--warmup") {
            options.warmup_s = parse_seconds(flag, value, true);
            have_warmup = true;
        } else if (flag == "--expect-bytes") {
            options.expect_bytes =
                parse_integer<std::uint64_t>(flag, value, 0, std::uint64_t{1} << 40, "a byte count, 0 or more");
        } else if (flag == "--hold") {
            options.hold_s = parse_seconds(flag, value, true);
        } else if (flag == "--proxy-auth") {
            // Not echoed: it is a password.
            if (value.find(':') == std::string_view::npos)
                throw UsageError("--proxy-auth: expected USER:PASS (no ':')");
            options.proxy_auth = std::string(value);
        } else if (flag == "--max-requests") {
            options.max_requests = parse_integer<std::uint64_t>(
                flag, value, 1, std::numeric_limits<std::uint64_t>::max(), "a whole number, 1 or more");
        } else {
            throw UsageError("unknown flag '" + std::string(flag) + "' (see --help)");
        }
    }

    if (!mode) throw UsageError("--mode is required: direct, proxy or idle");
    if (!have_url) throw UsageError("--url is required: http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH");
    options.mode = *mode;
    // The port of --connect-to defaults to the URL's, known only now.
    if (options.connect_to && options.connect_to->port == 0) options.connect_to->port = options.url.port;

    const std::string name(mode_name(options.mode));
    if (options.mode == Mode::proxy && !options.proxy) throw UsageError("--mode proxy needs --proxy HOST:PORT");
    if (options.mode == Mode::direct && options.proxy) {
        throw UsageError("--proxy is not used with --mode direct; use --mode proxy (or idle)");
    }
    if (options.connect_to && options.through_proxy()) {
        throw UsageError("--connect-to is not used through a proxy: the proxy dials the URL's host");
    }
    if (options.proxy_auth && !options.through_proxy()) throw UsageError("--proxy-auth needs --proxy");
    if (options.mode == Mode::idle) {
        if (options.new_connection) throw UsageError("--new-connection is not used with --mode idle");
        if (have_duration || have_warmup || options.max_requests) {
            throw UsageError("--duration, --warmup and --max-requests are not used with --mode idle; use --hold");
        }
    } else if (options.hold_s) {
        throw UsageError("--hold is only used with --mode idle (--mode " + name + " runs for --duration)");
    }
    return options;
}

}  // namespace tameflare::loadgen
