// tameflare-dataplane: the unprivileged process that parses agents' traffic
// (issue 24): the proxy and the agents' DNS stubs. Started by tameflared only
// (the channel is descriptor 3), as its own user with no capability; it
// confines itself before it reads a byte, then says Hello and serves what
// the supervisor sends (service.h). It exits when the supervisor goes away
// (the channel's end of file) and on any malformed or unexpected message: a
// data plane in doubt stops, and agents' connections fail closed.
#include "common/log.h"
#include "common/unique_fd.h"
#include "daemon/dataplane/confine.h"
#include "daemon/dataplane/service.h"
#include "daemon/ipc/messages.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    using namespace tameflare;
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
        ipc::Channel channel{UniqueFd(3)};
        ipc::send(channel, ipc::Hello{ipc::kProtocolVersion, static_cast<std::uint32_t>(::getpid()), TF_VERSION});
        dataplane::DataPlaneService service(std::move(channel));
        return service.run();
    } catch (const std::exception& error) {
        log(LogLevel::error, std::string("the data plane's channel failed: ") + error.what());
        return EXIT_FAILURE;
    }
}
