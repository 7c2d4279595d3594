// Arbitrary bytes as a frame body on the data plane channel: decoding any
// message (daemon/ipc/messages.h, daemon/dataplane/protocol.h) must never
// crash, over-read or allocate past the frame's own size, and what decodes
// must encode back to exactly the same bytes (one encoding per message, so
// nothing can hide in a second spelling). The policy blob and its assembly
// are fed the same bytes.
#include "daemon/dataplane/protocol.h"
#include "daemon/ipc/messages.h"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

using namespace tameflare;

template <typename Message>
void round_trip(const std::string& body) {
    const ipc::Frame frame{static_cast<std::uint16_t>(Message::kType), 0, body, {}};
    try {
        const auto message = ipc::decode<Message>(frame);
        if (ipc::encode(message) != body) std::abort();
    } catch (const ipc::DecodeError&) {
    }
}

// One message type per value of the first byte.
using Decoder = void (*)(const std::string&);
constexpr Decoder kDecoders[] = {
    round_trip<ipc::Hello>,
    round_trip<ipc::Ping>,
    round_trip<ipc::Pong>,
    round_trip<dataplane::PolicyPart>,
    round_trip<dataplane::KillSwitch>,
    round_trip<dataplane::Start>,
    round_trip<dataplane::OriginAnswer>,
    round_trip<dataplane::OriginRequest>,
    round_trip<dataplane::RegisterAgent>,
    round_trip<dataplane::UnregisterAgent>,
    round_trip<dataplane::Committed>,
    round_trip<dataplane::Answer>,
    round_trip<dataplane::Credential>,
    round_trip<dataplane::Leaf>,
    round_trip<dataplane::Records>,
    round_trip<dataplane::Commit>,
    round_trip<dataplane::Submit>,
    round_trip<dataplane::Withdraw>,
    round_trip<dataplane::CredentialRequest>,
    round_trip<dataplane::SignLeaf>,
    round_trip<dataplane::Counters>,
    [](const std::string& body) {
        try {
            const auto documents = dataplane::decode_policy(body);
            if (dataplane::encode(documents) != body) std::abort();
        } catch (const ipc::DecodeError&) {
        }
    },
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    kDecoders[data[0] % std::size(kDecoders)](body);
    return 0;
}
