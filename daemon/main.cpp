// tameflared: the TameFlare for Linux daemon.
#include "daemon/daemon_config.h"
#include "daemon/supervisor.h"
#include "policy/config_error.h"

#include <getopt.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace {

using namespace tameflare;

constexpr const char* kUsage = R"(Usage: tameflared [OPTIONS]

Runs the TameFlare for Linux daemon in the foreground.

Options:
  -c, --config FILE          main configuration (default /etc/tameflare/tameflared.json)
      --connectors-dir DIR   add a connector directory (repeatable; replaces the
                             configured list on first use; later ones override)
      --gateways-dir DIR     gateway directory (default /etc/tameflare/gateways.d)
      --check-config         validate the configuration, print a summary, exit 0 if valid
  -V, --version              print the version
  -h, --help                 this text

Signals: SIGHUP reloads the configuration (a bad one is refused and the running
one kept); SIGTERM and SIGINT stop the daemon.
)";

struct Options {
    daemon::ConfigLocation location;
    bool check = false;
};

int check_config(const Options& options) {
    policy::ConfigErrors errors;
    const auto config = daemon::load_daemon_config(options.location, errors);
    if (config) {
        auto result = daemon::load_policy(*config);
        if (result.ok()) {
            std::printf("configuration OK: %s\n", daemon::summary(*result.config).c_str());
            return EXIT_SUCCESS;
        }
        errors = std::move(result.errors);
    }
    std::fputs(policy::format_errors(errors).c_str(), stderr);
    std::fprintf(stderr, "configuration invalid: %zu error(s)\n", errors.size());
    return EXIT_FAILURE;
}

// The daemon itself: daemon/supervisor.h brings it up in stages, runs it
// until SIGTERM or SIGINT, and takes it down in reverse.
int run(const Options& options) {
    daemon::Supervisor supervisor(options.location);
    return supervisor.run();
}

}  // namespace

int main(int argc, char** argv) {
    // glibc gives a thread's heap back to the kernel as soon as its top is
    // free, and every request then faults the same pages in again: a third of
    // the proxy's CPU under load (docs/performance.md). Keep up to 64 MiB of
    // freed memory per arena; grow heaps 16 MiB at a time (address space, not
    // resident memory).
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    Options options;
    enum { kConnectorsDir = 256, kGatewaysDir, kCheck };
    const option long_options[] = {
        {"config", required_argument, nullptr, 'c'},
        {"connectors-dir", required_argument, nullptr, kConnectorsDir},
        {"gateways-dir", required_argument, nullptr, kGatewaysDir},
        {"check-config", no_argument, nullptr, kCheck},
        {"version", no_argument, nullptr, 'V'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    int c = 0;
    while ((c = getopt_long(argc, argv, "c:Vh", long_options, nullptr)) != -1) {
        switch (c) {
            case 'c':
                options.location.file = optarg;
                options.location.explicit_file = true;
                break;
            case kConnectorsDir: options.location.connector_dirs.emplace_back(optarg); break;
            case kGatewaysDir: options.location.gateways_dir = optarg; break;
            case kCheck: options.check = true; break;
            case 'V': std::printf("tameflared %s\n", TF_VERSION); return EXIT_SUCCESS;
            case 'h': std::fputs(kUsage, stdout); return EXIT_SUCCESS;
            default: std::fputs(kUsage, stderr); return 2;
        }
    }
    if (optind != argc) {
        std::fprintf(stderr, "tameflared: unexpected argument \"%s\"\n%s", argv[optind], kUsage);
        return 2;
    }
    return options.check ? check_config(options) : run(options);
}
