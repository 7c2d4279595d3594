#include "daemon/proxy/credential.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <vector>

namespace tameflare::proxy {

std::string render_credential(std::string_view format, std::string_view secret) {
    std::string value(format);
    if (const auto at = value.find("{secret}"); at != std::string::npos) {
        value.replace(at, 8, secret);
        return value;
    }
    const auto at = value.find("{basic:");
    const auto end = at == std::string::npos ? std::string::npos : value.find('}', at);
    if (end == std::string::npos) return value;  // refused at load: not reached
    std::string pair = value.substr(at + 7, end - at - 7) + ":";
    pair.append(secret);
    std::vector<unsigned char> encoded(4 * ((pair.size() + 2) / 3) + 1);
    const int length = EVP_EncodeBlock(encoded.data(), reinterpret_cast<const unsigned char*>(pair.data()),
                                       static_cast<int>(pair.size()));
    value.replace(at, end - at + 1, reinterpret_cast<const char*>(encoded.data()), static_cast<std::size_t>(length));
    OPENSSL_cleanse(pair.data(), pair.size());
    OPENSSL_cleanse(encoded.data(), encoded.size());
    return value;
}

}  // namespace tameflare::proxy
