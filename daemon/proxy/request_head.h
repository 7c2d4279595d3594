// Reading one HTTP/1.x request head from a connection's bytes with Beast's
// parser, and refusing the shapes that let two parsers disagree about where a
// request ends (request smuggling): both Content-Length and Transfer-Encoding,
// more than one Content-Length, a Transfer-Encoding other than "chunked",
// obsolete line folding, oversized or missing headers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tameflare::proxy {

struct RequestHead {
    std::string method;     // as sent, e.g. "PUT"
    std::string target;     // origin-form "/a?b", absolute-form "https://h/a", or authority "h:443" (CONNECT)
    unsigned version = 11;  // 10 or 11
    std::string host;       // the Host header, as sent
    std::string content_type;
    std::string method_override;  // X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override
    std::optional<std::uint64_t> content_length;
    bool chunked = false;
    bool expect_continue = false;
    bool upgrade = false;  // Connection: upgrade with an Upgrade header (WebSocket)
    bool keep_alive = true;
};

struct HeadResult {
    enum class Status { need_more, ok, bad };
    Status status = Status::need_more;
    RequestHead head;
    std::size_t consumed = 0;  // bytes of the head, when ok
    std::string error;         // why it is refused, when bad (sent in the 400 body)
};

inline constexpr std::size_t kMaxHeadBytes = std::size_t{16} * 1024;

// Parses the head at the start of `bytes`. need_more until the blank line
// that ends it has arrived (or more than `max_bytes` did, which is bad).
HeadResult parse_request_head(std::string_view bytes, std::size_t max_bytes = kMaxHeadBytes);

}  // namespace tameflare::proxy
