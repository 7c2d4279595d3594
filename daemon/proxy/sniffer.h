// Protocol detection on the first bytes of a connection, read with MSG_PEEK so
// nothing is consumed: a TLS ClientHello (with its server name and ALPN
// offer), an HTTP/1.x request, or anything else. The ClientHello is parsed by
// OpenSSL itself (a server-side handshake that stops at the client hello
// callback), not by code of ours.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tameflare::proxy {

enum class Protocol {
    need_more,  // not enough bytes yet to tell (or to read the whole ClientHello)
    tls,        // a well-formed ClientHello
    bad_tls,    // starts like TLS but is not a ClientHello OpenSSL accepts
    http,       // an HTTP/1.x request line is starting
    other,      // raw TCP: neither
};

struct Sniffed {
    Protocol protocol = Protocol::need_more;
    std::string server_name;        // SNI host name, lower case; empty when none was sent
    std::vector<std::string> alpn;  // protocols offered, in the client's order
    std::string error;              // why, for bad_tls
};

// Bytes past this without a complete ClientHello are refused as bad_tls (a
// ClientHello is one handshake message; 16 KiB covers post-quantum key shares).
inline constexpr std::size_t kMaxClientHelloBytes = 16 * 1024 + 5;

Sniffed sniff(std::span<const std::uint8_t> bytes);

}  // namespace tameflare::proxy
