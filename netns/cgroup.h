// Agent cgroups on the cgroup2 hierarchy: finding the mount, creating and
// opening cgroups, listing, killing and removing what lives in them.
#pragma once

#include "common/unique_fd.h"

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::netns {

// The cgroup2 mount point, from /proc/self/mountinfo; throws naming the fix when there is none.
std::filesystem::path cgroup2_mount();
// The calling process's cgroup, as an absolute path under cgroup2_mount() (from /proc/self/cgroup "0::/...").
std::filesystem::path own_cgroup();
// The cgroup of process `pid` as /proc/PID/cgroup's "0::" line gives it
// ("/a/b"), checked afterwards to be the process `pidfd` refers to (when
// pidfd >= 0): "" when it cannot be read or the process is gone, so that a
// recycled pid is never judged by another process's cgroup.
std::string process_cgroup(pid_t pid, int pidfd);
// The cgroup id of a cgroup directory (its inode number: what bpf_get_current_cgroup_id() reports).
std::uint64_t cgroup_id(const std::filesystem::path& dir);
// mkdir -p for cgroup directories (0755); existing directories are fine.
void ensure_cgroup(const std::filesystem::path& dir);

// Under systemd with Delegate=yes the unit's cgroup (marked with the
// trusted.delegate or user.delegate extended attribute) is the daemon's to
// manage. The calling process moves itself into the leaf <unit>/daemon
// (cgroup v2 keeps processes out of inner nodes) and gets <unit>/agents, the
// root for its agents. nullopt when its cgroup is not delegated. Throws
// std::system_error when the move fails.
std::optional<std::filesystem::path> adopt_delegated_cgroup();

// A cgroup (v1) or cgroup2 mount of this mount namespace and its per-mount flags (MS_NOSUID, MS_NODEV, ...).
struct CgroupMount {
    std::filesystem::path mount_point;
    unsigned long flags = 0;
};
// Every cgroup and cgroup2 mount in /proc/self/mountinfo, in mount order.
std::vector<CgroupMount> cgroup_mounts();

// Move-only; owns an O_DIRECTORY fd of the cgroup. The destructor does not
// remove the cgroup: agents outlive a daemon restart, the daemon decides.
class Cgroup {
public:
    // Fails if it exists; `name` is one path component of [A-Za-z0-9._-], at most 64 characters, not "." or "..".
    static Cgroup create(const std::filesystem::path& parent, const std::string& name);
    // An existing cgroup directory.
    static Cgroup open(const std::filesystem::path& dir);

    Cgroup(Cgroup&&) noexcept = default;
    Cgroup& operator=(Cgroup&&) noexcept = default;
    Cgroup(const Cgroup&) = delete;
    Cgroup& operator=(const Cgroup&) = delete;
    ~Cgroup() = default;

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }
    [[nodiscard]] int fd() const { return fd_.get(); }  // for clone3 CLONE_INTO_CGROUP
    [[nodiscard]] std::uint64_t id() const;
    // "populated 1" in cgroup.events: a process lives here or in a descendant.
    [[nodiscard]] bool populated() const;
    // cgroup.procs of this cgroup and every descendant.
    [[nodiscard]] std::vector<pid_t> processes() const;
    // cgroup.kill when the kernel has it, else kill_each_process().
    void kill() const;
    // The fallback of kill() for kernels before 5.14: SIGKILL every process (through a pidfd, after checking it
    // still lives here, so a recycled pid is never hit) until none is left or `timeout` passes; true when empty.
    bool kill_each_process(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
    // Kills what is left, waits up to `timeout` for it to be empty (poll on cgroup.events), removes descendants
    // and itself, deepest first. True when it is gone.
    bool remove(std::chrono::milliseconds timeout);

private:
    Cgroup(std::filesystem::path path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

    std::filesystem::path path_;
    UniqueFd fd_;
};

}  // namespace tameflare::netns
