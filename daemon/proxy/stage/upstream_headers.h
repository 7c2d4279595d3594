// The request's headers as they go upstream, pure: the agent's own
// credential removed and the vault's put in (spelled as the route or the
// connector says), hop-by-hop and proxy headers kept here, the request id
// added. Table-tested in tests/daemon/proxy/stage/upstream_headers_test.cpp.
#pragma once

#include <boost/beast/http/fields.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace tameflare::proxy::stage {

struct UpstreamHeaders {
    // The header the credential goes in ("Authorization", "x-api-key") and
    // its rendered value; none when the connector injects nothing.
    std::optional<std::pair<std::string, std::string>> credential;
    bool upgrade = false;        // a protocol upgrade (WebSocket) passes through
    bool keep_alive = true;      // the agent's connection stays open after this request
    bool sent_continue = false;  // the proxy answered Expect: 100-continue itself
    std::string request_id;
};

// Rewrites `fields` in place. The caller cleanses the credential's value.
void rewrite_upstream_headers(boost::beast::http::fields& fields, const UpstreamHeaders& how);

}  // namespace tameflare::proxy::stage
