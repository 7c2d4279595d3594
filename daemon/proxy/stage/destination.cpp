#include "daemon/proxy/stage/destination.h"

#include "daemon/proxy/address_policy.h"

#include <algorithm>

namespace tameflare::proxy::stage {

std::variant<std::vector<IpAddress>, DestinationRefusal> agree_destination(const std::string& host,
                                                                           std::vector<IpAddress> resolved,
                                                                           const std::optional<IpAddress>& dialed,
                                                                           const std::vector<Cidr>& allowed_upstreams) {
    if (dialed) {
        if (std::find(resolved.begin(), resolved.end(), *dialed) == resolved.end()) {
            return DestinationRefusal{
                "the agent connected to " + dialed->to_string() + ", which is not an address of \"" + host + "\"",
                false};
        }
        resolved = {*dialed};
    }
    std::erase_if(resolved, [&](const IpAddress& a) { return !upstream_allowed(a, allowed_upstreams); });
    if (resolved.empty()) {
        return DestinationRefusal{
            "\"" + host + "\" has no address the proxy may connect to (" +
                (dialed ? std::string(to_string(classify(*dialed))) : std::string("no global address")) +
                "); loopback, private and link-local upstreams must be listed in allowed_upstreams",
            true};
    }
    return resolved;
}

}  // namespace tameflare::proxy::stage
