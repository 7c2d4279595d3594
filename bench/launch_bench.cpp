// What launching an agent costs: `tf run -- /bin/true`, end to end (the
// launch socket, the cgroup, the namespaces, the sandbox layers, the exit),
// in both isolations. Root, BTF and cgroup2; skips with the reason otherwise.
//
// Several builds can be measured in one run, interleaved, so their ratio is
// taken on the same machine at the same time: TF_LAUNCH_BENCH_SYSTEMS is a
// space-separated list of NAME=TAMEFLARED:TF (default: this build, as
// "current"). Each daemon runs on its own cgroup root, pins and sockets.
#include "bpf/enforcer.h"
#include "netns/cgroup.h"
#include "tests/support/daemon_process.h"
#include "tests/support/temp_dir.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace tameflare::bench {
namespace {

namespace fs = std::filesystem;
using testing::DaemonProcess;
using testing::TempDir;

struct System {
    std::string name;
    std::string daemon;
    std::string tf;
};

// One running daemon per measured build, started on first use, stopped and cleaned up at exit.
class Launcher {
public:
    explicit Launcher(const System& system) : system_(system) {
        const std::string tag = system.name + "-" + std::to_string(::getpid());
        cgroup_root_ = netns::cgroup2_mount() / ("tf-launch-bench-" + tag);
        pins_ = fs::path("/sys/fs/bpf") / ("tf-launch-bench-" + tag);
        fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
        fs::create_directories(dir_.path() / "gateways.d");
        std::ofstream(dir_.path() / "tameflared.json")
            << R"({"connector_dirs": [")" << TF_SOURCE_DIR << R"(/connectors"], "gateways_dir": "gateways.d",
                  "state_dir": "state", "runtime_dir": "run", "dbus": {"enabled": false},
                  "agents": {"cgroup_root": ")"
            << cgroup_root_.string() << R"(", "bpf_pin_dir": ")" << pins_.string() << R"("},
                  "proxy": {"transparent_listen": "127.0.0.1:0", "explicit_listen": "127.0.0.1:0",
                            "system_resolver": false}})";
        std::ofstream(dir_.path() / "gateways.d" / "bench.json") << R"({"name": "bench",
                   "connectors": {"plain": {"connector": "http", "domains": ["plain.test"], "preset": "allow_all"}}})";
        daemon_.emplace(system.daemon, dir_.path() / "tameflared.json", dir_.path() / "daemon.log");
        if (!daemon_->wait_for_log("tameflared started")) error_ = "tameflared did not start: " + daemon_->log();
    }
    ~Launcher() {
        daemon_->process().signal(SIGTERM);
        daemon_->process().wait();
        std::error_code ignored;
        if (fs::exists(cgroup_root_, ignored)) {
            auto root = netns::Cgroup::open(cgroup_root_);
            bpf::Enforcer(bpf::EnforcerOptions{pins_, true, netns::cgroup2_mount()}).release(cgroup_root_);
            root.remove(std::chrono::seconds(5));
        }
        fs::remove_all(pins_, ignored);
    }
    Launcher(const Launcher&) = delete;
    Launcher& operator=(const Launcher&) = delete;

    [[nodiscard]] const std::string& error() const { return error_; }

    // tf run --isolation ISOLATION -- /bin/true; its exit status.
    int launch(const std::string& isolation) const {
        std::vector<std::string> argv{
            system_.tf,  "run",      "--socket",    (dir_.path() / "run" / "launch.sock").string(),
            "--gateway", "bench",    "--isolation", isolation,
            "--",        "/bin/true"};
        std::vector<char*> pointers;
        for (auto& arg : argv) pointers.push_back(arg.data());
        pointers.push_back(nullptr);
        pid_t pid = 0;
        if (::posix_spawn(&pid, pointers[0], nullptr, nullptr, pointers.data(), environ) != 0) return -1;
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

private:
    System system_;
    TempDir dir_{"tf-launch-bench"};
    fs::path cgroup_root_;
    fs::path pins_;
    std::optional<DaemonProcess> daemon_;
    std::string error_;
};

std::map<std::string, std::unique_ptr<Launcher>>& launchers() {
    static std::map<std::string, std::unique_ptr<Launcher>> running;
    return running;
}

void launch(benchmark::State& state, const System& system, const std::string& isolation) {
    if (const std::string reason = bpf::unsupported_reason(); !reason.empty()) {
        state.SkipWithError(reason.c_str());
        return;
    }
    auto& launcher = launchers()[system.name];
    if (!launcher) launcher = std::make_unique<Launcher>(system);
    if (!launcher->error().empty()) {
        state.SkipWithError(launcher->error().c_str());
        return;
    }
    for (auto _ : state) {
        if (launcher->launch(isolation) != 0) {
            state.SkipWithError("tf run -- /bin/true failed");
            return;
        }
    }
}

std::vector<System> systems() {
    const char* given = std::getenv("TF_LAUNCH_BENCH_SYSTEMS");
    if (given == nullptr || *given == '\0') return {System{"current", TAMEFLARED_BINARY, TF_BINARY}};
    std::vector<System> out;
    std::istringstream in(given);
    for (std::string item; in >> item;) {
        const auto equals = item.find('=');
        const auto colon = item.find(':', equals);
        if (equals == std::string::npos || colon == std::string::npos) continue;
        out.push_back(
            System{item.substr(0, equals), item.substr(equals + 1, colon - equals - 1), item.substr(colon + 1)});
    }
    return out;
}

// Interleaved: every system in one isolation, then the next isolation.
const bool registered = [] {
    for (const std::string isolation : {"netns", "cgroup"}) {
        for (const auto& system : systems()) {
            benchmark::RegisterBenchmark(
                ("launch/" + isolation + "/" + system.name).c_str(),
                [system, isolation](benchmark::State& state) { launch(state, system, isolation); })
                ->Iterations(1)
                ->Repetitions(20)
                ->ReportAggregatesOnly(true)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
    }
    return true;
}();

}  // namespace
}  // namespace tameflare::bench

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    tameflare::bench::launchers().clear();
    benchmark::Shutdown();
    return 0;
}
