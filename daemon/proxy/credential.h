// The credential the proxy puts on an allowed request, spelled as its
// connector (or route) says: "Bearer {secret}", "token {secret}", or HTTP
// Basic "Basic {basic:x-access-token}" (base64 of "x-access-token:" and the
// secret, as GitHub's git endpoints take it).
#pragma once

#include <string>
#include <string_view>

namespace tameflare::proxy {

// `format` with its first {secret} replaced by the secret, or its first
// {basic:USER} by base64("USER:secret"). The caller cleanses the result.
std::string render_credential(std::string_view format, std::string_view secret);

}  // namespace tameflare::proxy
