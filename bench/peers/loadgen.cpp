// tf_loadgen: the HTTP/HTTPS load generator of the side-by-side proxy
// benchmark (tameflared, Squid ssl_bump, mitmproxy, tinyproxy). Closed-loop
// connections on one thread, one JSON report on stdout; --help lists the flags.
//
//   tf_loadgen --mode direct --url https://api.bench.test:8443/128 --connect-to 127.0.0.2 --ca ca.pem
//   tf_loadgen --mode proxy --proxy 127.0.0.1:3128 --url https://api.bench.test/128 --ca ca.pem --connections 32
//   tf_loadgen --mode idle --proxy 127.0.0.1:3128 --url http://127.0.0.3:8080/ --connections 10000 --hold 30
//
// Exit status: 0 when requests succeeded, 1 when none did or the run could
// not start (the report is still printed when there is one), 2 for bad flags.
#include "bench/peers/loadgen_options.h"
#include "bench/peers/loadgen_run.h"

#include <sys/resource.h>

#include <csignal>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

namespace {

// Every connection is a file descriptor; keep some for the rest (epoll, stdio, resolver).
constexpr rlim_t kSpareDescriptors = 64;

void raise_descriptor_limit(unsigned connections) {
    const rlim_t needed = connections + kSpareDescriptors;
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit too.
        const rlimit raised{needed, needed};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
        throw std::runtime_error("--connections " + std::to_string(connections) + " needs " + std::to_string(needed) +
                                 " file descriptors, more than the hard limit of " + std::to_string(limit.rlim_max) +
                                 " (RLIMIT_NOFILE); raise it (ulimit -Hn, LimitNOFILE=) or use fewer connections");
    }
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace tameflare::loadgen;
    std::optional<Options> options;
    try {
        options = parse_options(argc, argv);
    } catch (const UsageError& error) {
        std::cerr << "tf_loadgen: " << error.what() << "\n";
        return 2;
    }
    if (!options) {
        std::cout << usage();
        return 0;
    }
    std::signal(SIGPIPE, SIG_IGN);
    try {
        raise_descriptor_limit(options->connections);
        const Outcome outcome = run(*options);
        std::cout << outcome.report.dump() << std::endl;
        if (!outcome.failure.empty()) {
            std::cerr << "tf_loadgen: the run failed: " << outcome.failure << "\n";
            return 1;
        }
        return 0;
    } catch (const std::exception& error) {
        std::cerr << "tf_loadgen: " << error.what() << "\n";
        return 1;
    }
}
