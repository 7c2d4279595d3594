// Arbitrary bytes as an HTTP request head: refused or read, never both a
// length and chunking, never past the bytes given.
#include "daemon/proxy/request_head.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tameflare::proxy;
    const HeadResult result = parse_request_head(std::string_view(reinterpret_cast<const char*>(data), size));
    if (result.status == HeadResult::Status::bad && result.error.empty()) std::abort();
    if (result.status == HeadResult::Status::ok) {
        if (result.consumed == 0 || result.consumed > size) std::abort();
        if (result.head.content_length && result.head.chunked) std::abort();
        if (result.head.method.empty() || result.head.target.empty()) std::abort();
    }
    return 0;
}
