#include "daemon/proxy/stage/upstream_headers.h"

#include "common/text.h"

#include <boost/beast/http/rfc7230.hpp>

#include <algorithm>
#include <vector>

namespace tameflare::proxy::stage {

namespace http = boost::beast::http;

void rewrite_upstream_headers(http::fields& fields, const UpstreamHeaders& how) {
    if (how.credential) {
        fields.erase(http::field::authorization);
        fields.erase(how.credential->first);
        fields.set(how.credential->first, how.credential->second);
    }
    // Hop-by-hop and proxy headers stay here, and so does anything the agent
    // names as ours (X-TameFlare-*).
    std::vector<std::string> hop;
    for (const auto& field : fields) {
        const auto name = ascii_lower(as_view(field.name_string()));
        if (name.starts_with("x-tameflare-") || name == "proxy-authorization" || name == "proxy-connection" ||
            name == "keep-alive" || name == "te" || name == "trailer") {
            hop.push_back(name);
        }
    }
    for (const auto& token : http::token_list{fields[http::field::connection]}) {
        const auto name = ascii_lower(as_view(token));
        if (name != "close" && name != "keep-alive" && name != "upgrade") hop.push_back(name);
    }
    for (const auto& name : hop) fields.erase(name);
    if (how.upgrade) {
        fields.set(http::field::connection, "Upgrade");
    } else {
        fields.erase(http::field::upgrade);
        fields.erase(http::field::connection);
        if (!how.keep_alive) fields.set(http::field::connection, "close");
    }
    if (how.sent_continue) fields.erase(http::field::expect);
    fields.set("X-TameFlare-Request-Id", how.request_id);
}

}  // namespace tameflare::proxy::stage
