// Arbitrary bytes as a frame body from the data plane: decoding any message
// must never crash, over-read or allocate past the frame's own size, and
// what decodes must encode back to exactly the same bytes (one encoding per
// message, so nothing can hide in a second spelling).
#include "daemon/ipc/messages.h"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

using namespace tameflare::ipc;

template <typename Message>
void round_trip(std::uint16_t type, const std::string& body) {
    const Frame frame{type, 0, body, {}};
    try {
        const auto message = decode<Message>(frame);
        if (encode(message) != body) std::abort();
    } catch (const DecodeError&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    const auto type = static_cast<std::uint16_t>(data[0] % 4);
    round_trip<Hello>(type, body);
    round_trip<Ping>(type, body);
    round_trip<Pong>(type, body);
    return 0;
}
