// Host-side helpers for the end-to-end test: commands with a deadline, the
// cached Debian root (debootstrap), and a booted systemd-nspawn container
// driven through nsenter. Nothing here knows about tameflared.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::e2e {

using namespace std::chrono_literals;
using Seconds = std::chrono::seconds;

struct Result {
    int status = -1;         // exit status, 128 + signal, or -1 when it could not start
    bool timed_out = false;  // killed at the deadline
    std::string out;
    std::string err;
    double seconds = 0;
};

// Runs argv (argv[0] a path or a name looked up in PATH) in its own process
// group, feeding `input` on stdin; past `deadline` the whole group is killed.
Result run(const std::vector<std::string>& argv, Seconds deadline = 60s, const std::string& input = "",
           const std::vector<std::string>& extra_env = {});

// A child left running (its output to a file), killed with its group when
// the object dies unless it was waited for.
class Background {
public:
    Background(const std::vector<std::string>& argv, const std::filesystem::path& output,
               const std::vector<std::string>& extra_env = {});
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;
    ~Background();

    [[nodiscard]] pid_t pid() const { return pid_; }
    // The exit status once it has ended (reaps it), or nullopt while it runs.
    std::optional<int> poll();
    // Waits up to `deadline`; nullopt when it still runs then.
    std::optional<int> wait(Seconds deadline);
    void kill_group(int signal) const;

private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& text, std::filesystem::perms mode);
std::string trim(std::string text);
std::string sha256_hex(const std::string& data);
std::string shell_quote(const std::string& word);

// The cgroup2 mount of this host, from /proc/self/mountinfo ("" when none).
std::filesystem::path cgroup2_mount();

// Why this host cannot boot the container ("" when it can): not root, no
// systemd-nspawn, debootstrap or cpack, no cgroup2, no BTF.
std::string host_unsupported_reason();

// The Debian mirror the host's apt uses for `suite` (apt-get indextargets),
// and the HTTP proxy apt is configured with ("" when none).
struct Mirror {
    std::string uri;  // ends with '/'
    std::string http_proxy;
};
std::optional<Mirror> find_mirror(const std::string& suite);
// Whether apt's own transport fetches the mirror's InRelease (the only
// reason a cold cache may skip instead of fail).
bool apt_reaches(const Mirror& mirror, const std::string& suite, std::string& error);

// A debootstrapped root, cached as <cache>/<suite>-<hash of the recipe>:
// built in <cache>/.tmp-*, renamed into place when complete. Other roots in
// the cache and stale temporary ones are removed after a build.
struct RootCache {
    std::filesystem::path cache_dir;
    std::string suite;
    std::vector<std::string> packages;  // --include, besides the minbase variant
    // Returns the cached root, building it when absent. `skip` is set (and
    // nothing returned) when apt itself cannot reach the mirror.
    std::optional<std::filesystem::path> get(std::string& log, std::string& skip);
};

// nspawn leaves /run/systemd/nspawn/propagate/<machine> behind when /run is
// not a tmpfs (it refuses to remove a disk file system): removes it.
void remove_nspawn_leftovers(const std::string& machine);

// A booted container: systemd-nspawn -b on `root`, commands run with
// nsenter in the namespaces of its PID 1.
class Container {
public:
    struct Options {
        std::filesystem::path root;
        std::string machine;
        std::filesystem::path console_log;
        std::vector<std::string> nspawn_args;  // extra arguments
        // When set: a bpffs instance of its own, mounted here in a private
        // mount namespace nspawn runs in, bound at the container's
        // /sys/fs/bpf (nspawn gives it a read-only /sys without one). It
        // dies with the container.
        std::filesystem::path bpffs_dir;
    };
    explicit Container(Options options);
    Container(const Container&) = delete;
    Container& operator=(const Container&) = delete;
    ~Container();

    // Starts nspawn and waits for the container's PID 1 to appear.
    bool start(std::string& error, Seconds deadline = 30s);
    // `systemctl is-system-running --wait`, retried until systemd answers.
    std::string wait_booted(Seconds deadline);
    // sh -c `script` inside, as root, with a clean environment.
    Result sh(const std::string& script, Seconds deadline = 60s, const std::string& input = "") const;
    // The argv that runs `script` inside (for Background).
    [[nodiscard]] std::vector<std::string> sh_argv(const std::string& script) const;
    // Powers off (SIGRTMIN+4 to its init), waits, then kills what is left.
    // Returns how it ended, for the log.
    std::string stop(Seconds deadline = 60s);

    [[nodiscard]] pid_t leader() const { return leader_; }
    [[nodiscard]] pid_t nspawn_pid() const { return nspawn_ ? nspawn_->pid() : -1; }

private:
    Options options_;
    std::optional<Background> nspawn_;
    pid_t leader_ = -1;
};

}  // namespace tameflare::e2e
