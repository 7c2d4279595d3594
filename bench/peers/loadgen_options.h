// tf_loadgen's command line: what to load, through what, for how long.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tameflare::loadgen {

enum class Mode { direct, proxy, idle };

std::string_view mode_name(Mode mode);

// http://host[:port]/path or https://host[:port]/path. The host is the name
// of the Host header, the SNI and the certificate check.
struct Url {
    std::string text;    // as given
    bool https = false;  //
    std::string host;    // without the brackets of an IPv6 literal
    std::uint16_t port = 0;
    std::string target = "/";  // origin-form: path and query

    // host[:port] as the Host header writes it: the port only when not the scheme's default.
    std::string host_header() const;
    // host:port, always with the port (CONNECT's request target).
    std::string authority() const;
    // The host, in brackets when an IPv6 literal.
    std::string bracketed_host() const;
};

struct HostPort {
    std::string host;
    std::uint16_t port = 0;
};

struct Options {
    Mode mode = Mode::direct;
    Url url;
    std::optional<HostPort> proxy;       // --proxy; idle mode goes through it when given
    std::optional<HostPort> connect_to;  // --connect-to; the port defaults to the URL's
    std::string ca_file;                 // --ca; empty: the system's trust store
    unsigned connections = 1;
    double duration_s = 10;
    double warmup_s = 1;
    bool new_connection = false;
    std::optional<std::uint64_t> expect_bytes;
    std::optional<double> hold_s;           // idle mode; none: until SIGTERM or SIGINT
    std::optional<std::string> proxy_auth;  // user:pass
    std::optional<std::uint64_t> max_requests;

    bool through_proxy() const { return mode == Mode::proxy || (mode == Mode::idle && proxy); }
};

// A flag that is missing, unknown, or has a value that does not fit; what()
// names the flag, the value and what was expected.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Throws UsageError. Returns none for --help.
std::optional<Options> parse_options(int argc, char** argv);

std::string_view usage();

}  // namespace tameflare::loadgen
