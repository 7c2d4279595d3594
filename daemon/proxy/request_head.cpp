#include "daemon/proxy/request_head.h"

#include "common/text.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <limits>

namespace tameflare::proxy {

namespace http = boost::beast::http;

namespace {

HeadResult bad(std::string why) {
    HeadResult result;
    result.status = HeadResult::Status::bad;
    result.error = std::move(why);
    return result;
}

// Obsolete line folding (a header line that starts with a space or tab)
// is refused outright (RFC 9112, 5.2): Beast would join the lines, another
// parser might not.
bool has_obs_fold(std::string_view head) {
    for (std::size_t i = head.find('\n'); i != std::string_view::npos && i + 1 < head.size();
         i = head.find('\n', i + 1)) {
        if (head[i + 1] == ' ' || head[i + 1] == '\t') return true;
    }
    return false;
}

}  // namespace

HeadResult parse_request_head(std::string_view bytes, std::size_t max_bytes) {
    const auto end = bytes.find("\r\n\r\n");
    // A line ending without CR: some servers accept it, so it is refused.
    const std::string_view scanned = bytes.substr(0, end == std::string_view::npos ? bytes.size() : end + 4);
    for (std::size_t i = scanned.find('\n'); i != std::string_view::npos; i = scanned.find('\n', i + 1)) {
        if (i == 0 || scanned[i - 1] != '\r') return bad("line ending without CR");
    }
    if (end == std::string_view::npos) {
        if (bytes.size() > max_bytes) return bad("request head larger than " + std::to_string(max_bytes) + " bytes");
        return {};
    }
    const std::string_view head = bytes.substr(0, end + 4);
    if (head.size() > max_bytes) return bad("request head larger than " + std::to_string(max_bytes) + " bytes");
    if (has_obs_fold(head.substr(0, head.size() - 2))) return bad("obsolete line folding in a header");

    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(max_bytes));
    // Only the head is parsed here; without this Beast refuses a declared
    // Content-Length over its 1 MiB default as if the head were malformed.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // boost::none misbehaves in Beast 1.74
    parser.eager(false);
    boost::system::error_code error;
    const std::size_t used = parser.put(boost::asio::buffer(head.data(), head.size()), error);
    if (error && error != http::error::need_more) return bad("malformed request head: " + error.message());
    if (!parser.is_header_done()) return bad("malformed request head");

    const auto& request = parser.get();
    HeadResult result;
    result.status = HeadResult::Status::ok;
    result.consumed = used;
    RequestHead& out = result.head;
    out.method = std::string(as_view(request.method_string()));
    out.target = std::string(as_view(request.target()));
    out.version = request.version();
    if (out.version != 10 && out.version != 11) return bad("unsupported HTTP version");

    std::size_t hosts = 0;
    std::size_t lengths = 0;
    std::size_t encodings = 0;
    using boost::beast::iequals;
    for (const auto& field : request.base()) {
        const std::string_view value = as_view(field.value());
        switch (field.name()) {
            case http::field::host:
                ++hosts;
                out.host = std::string(value);
                break;
            case http::field::content_length:
                ++lengths;
                // Digits only: Beast accepts the list form "5, 5", other parsers may not.
                if (value.empty() || value.find_first_not_of("0123456789") != std::string_view::npos) {
                    return bad("invalid Content-Length: " + std::string(value));
                }
                break;
            case http::field::transfer_encoding:
                ++encodings;
                if (!iequals(field.value(), "chunked")) {
                    return bad("Transfer-Encoding other than \"chunked\": " + std::string(value));
                }
                break;
            case http::field::content_type: out.content_type = std::string(value); break;
            case http::field::expect:
                if (!iequals(field.value(), "100-continue")) return bad("unsupported Expect: " + std::string(value));
                out.expect_continue = true;
                break;
            default:
                if (iequals(field.name_string(), "x-http-method-override") ||
                    iequals(field.name_string(), "x-http-method") ||
                    iequals(field.name_string(), "x-method-override")) {
                    if (!out.method_override.empty() && !iequals(out.method_override, field.value())) {
                        return bad("conflicting method override headers");
                    }
                    out.method_override = std::string(value);
                }
                break;
        }
    }
    if (lengths > 0 && encodings > 0) return bad("both Content-Length and Transfer-Encoding");
    if (lengths > 1) return bad("more than one Content-Length");
    if (encodings > 1) return bad("more than one Transfer-Encoding");
    if (hosts > 1) return bad("more than one Host header");
    if (hosts == 0 && out.version == 11) return bad("HTTP/1.1 request without a Host header");
    if (lengths == 1) {
        const auto length = parser.content_length();
        if (!length) return bad("invalid Content-Length");
        out.content_length = *length;
    }
    out.chunked = parser.chunked();
    out.upgrade = parser.upgrade();
    out.keep_alive = parser.keep_alive();
    return result;
}

}  // namespace tameflare::proxy
