// Starting an agent: clone3 straight into its cgroup (it never exists outside
// it), into its network namespace, a private mount namespace, a cgroup
// namespace and a PID namespace (with a small init as PID 1), without
// capabilities, with no_new_privs, and in a Landlock domain.
#pragma once

#include "common/unique_fd.h"
#include "netns/landlock.h"
#include "netns/seccomp.h"

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace tameflare::netns {

// Bind-mounts `source` (read-only) over each of `targets` that exists; missing targets are skipped.
struct BindFile {
    std::string source;
    std::vector<std::string> targets;
};

struct SpawnOptions {
    std::vector<std::string> argv;  // argv[0] looked up in the PATH of `env` (execvpe semantics), as the new user
    std::vector<std::string> env;   // "NAME=value"
    int cwd_fd = -1;                // fchdir target (an O_PATH or O_DIRECTORY fd); -1: "/"
    uid_t uid = 65534;
    gid_t gid = 65534;
    std::vector<gid_t> groups;
    int stdin_fd = -1;  // dup'd onto 0, 1, 2; -1: /dev/null
    int stdout_fd = -1;
    int stderr_fd = -1;
    int cgroup_fd = -1;  // required: clone3 CLONE_INTO_CGROUP
    int netns_fd = -1;   // -1: stay in the daemon's network namespace
    // A mount namespace (the caller's: what the user who ran tf run sees)
    // whose private copy the agent gets; -1: a copy of the daemon's, which a
    // hardened unit (ProtectHome=, PrivateTmp=) narrows for the daemon alone.
    int mount_namespace_fd = -1;
    // The working directory's path in the agent's mount namespace. When set, the agent starts there (after every
    // mount below, so relative paths see them too) and spawn checks that it is the directory cwd_fd names; a
    // working directory inside a private tmp directory is carried into it at the same path. Empty: fchdir(cwd_fd).
    std::string cwd_path;
    // Directories that get an empty tmpfs of the agent's own (mode 1777): its private /tmp and /var/tmp.
    std::vector<std::string> private_tmp;
    // Directories bind-mounted onto themselves, so that they cannot be renamed or removed (a file among them is
    // made read-only as well); outer first. Then `protect`: each existing path becomes a read-only bind mount.
    std::vector<std::string> pins;
    std::vector<std::string> protect;
    // Paths the agent must not see (the daemon's state, the user's keys): each one that exists in the agent's mount
    // namespace is covered, a directory by an empty read-only tmpfs, anything else by /dev/null, read-only.
    std::vector<std::string> hide;
    // Files (sockets of services outside) the agent must not reach: each existing one is covered by a read-only
    // bind mount of /dev/null.
    std::vector<std::string> mask;
    std::vector<BindFile> binds;  // in a private mount namespace (MS_REC|MS_PRIVATE on / first)
    // unshare(CLONE_NEWCGROUP) once inside the cgroup, and every cgroup filesystem read-only in the agent's mount
    // namespace: the agent cannot write cgroup.procs outside its own subtree, even as uid 0 (a cgroup namespace alone
    // stops that only when cgroup2 is mounted with nsdelegate).
    bool new_cgroup_namespace = true;
    // A PID namespace of its own: the first process is a small init (PID 1) that reaps, passes on every signal
    // it gets to the command, and exits with the command's status (128 + N for a signal N); a procfs of that
    // namespace is mounted over /proc (hidepid=invisible, and subset=pid when `proc_pids_only` and the kernel
    // has it). The init is not dumpable and stays outside the command's Landlock domain: the command can
    // neither ptrace it nor read its memory.
    bool pid_namespace = true;
    bool proc_pids_only = true;
    // The Landlock domain the command enters before execve (nullptr or abi 0: none).
    const LandlockPolicy* landlock = nullptr;
    int landlock_abi = 0;
    // The seccomp filter the command runs under (nullptr: none).
    const SeccompProgram* seccomp = nullptr;
};

// A started agent (with a PID namespace: its init). Move-only; owns a pidfd. The destructor neither kills nor reaps:
// agents outlive their Process.
class Process {
public:
    Process(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}

    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] int pidfd() const { return pidfd_.get(); }
    // pidfd_send_signal; a process that already exited is not an error.
    void signal(int sig) const;
    // waitid(P_PIDFD, WEXITED | WNOHANG): the exit code, or 128 + signal; nullopt while it runs.
    std::optional<int> try_wait();
    // Blocks until it exits: the exit code, or 128 + signal.
    int wait();

private:
    std::optional<int> wait_for(int options);

    pid_t pid_ = -1;
    UniqueFd pidfd_;
    std::optional<int> status_;
};

// Throws std::system_error naming the failed step and argv[0] (e.g. "execve python3: No such file or directory").
Process spawn(const SpawnOptions& options);

}  // namespace tameflare::netns
