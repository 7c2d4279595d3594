// Arbitrary first bytes of a connection into the protocol sniffer: it must
// classify everything without crashing, and agree with itself on prefixes.
#include "daemon/proxy/sniffer.h"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tameflare::proxy;
    const std::span<const std::uint8_t> bytes(data, size);
    const Sniffed sniffed = sniff(bytes);
    if (sniffed.protocol == Protocol::bad_tls && sniffed.error.empty()) std::abort();
    if (sniffed.protocol != Protocol::tls && (!sniffed.server_name.empty() || !sniffed.alpn.empty())) std::abort();
    for (const char c : sniffed.server_name) {
        if (c >= 'A' && c <= 'Z') std::abort();
    }
    // Once decided, more bytes do not change the verdict between TLS and the rest.
    if (sniffed.protocol == Protocol::http || sniffed.protocol == Protocol::other) {
        if (size > 1 && sniff(bytes.first(size - 1)).protocol == Protocol::tls) std::abort();
    }
    return 0;
}
