// tameflare-dataplane: the unprivileged process that will parse agents'
// traffic (issue 24). Started by tameflared only (the channel is descriptor
// 3), as its own user with no capability; it confines itself before it reads
// a byte, then says Hello and answers on the channel. It exits when the
// supervisor goes away (the channel's end of file) and on any malformed or
// unexpected message: a data plane in doubt stops, and agents' connections
// fail closed.
#include "common/log.h"
#include "common/unique_fd.h"
#include "daemon/dataplane/confine.h"
#include "daemon/ipc/messages.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace tameflare;

int serve(const ipc::Channel& channel) {
    ipc::send(channel, ipc::Hello{ipc::kProtocolVersion, static_cast<std::uint32_t>(::getpid()), TF_VERSION});
    for (;;) {
        const auto frame = channel.receive();
        if (!frame) return EXIT_SUCCESS;  // the supervisor is gone
        if (frame->type == static_cast<std::uint16_t>(ipc::Type::ping)) {
            ipc::send(channel, ipc::Pong{ipc::decode<ipc::Ping>(*frame).nonce}, frame->seq);
            continue;
        }
        log(LogLevel::error, "the data plane got a message it does not take; it stops",
            {{"TYPE", std::to_string(frame->type)}});
        return EXIT_FAILURE;
    }
}

}  // namespace

int main(int argc, char** argv) {
    dataplane::Confinement confinement;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--read") == 0 && i + 1 < argc) {
            confinement.readable.emplace_back(argv[++i]);
        } else {
            log(LogLevel::error, std::string("tameflare-dataplane: unknown argument ") + argv[i],
                {{"HINT", "it is started by tameflared, not by hand"}});
            return 2;
        }
    }
    try {
        dataplane::confine_self(confinement);
    } catch (const dataplane::ConfineError& error) {
        log(LogLevel::error, std::string("the data plane refuses to run unconfined: ") + error.what(),
            {{"HINT", error.hint()}});
        return EXIT_FAILURE;
    }
    try {
        const ipc::Channel channel{UniqueFd(3)};
        return serve(channel);
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("the data plane's channel failed: ") + error.what());
        return EXIT_FAILURE;
    }
}
