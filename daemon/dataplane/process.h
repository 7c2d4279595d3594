// The data plane as a process of its own, seen from the supervisor (issue 24):
// started by clone3 straight into its cgroup (<unit>/dataplane), as its own
// user with no capability (drop_privileges), the binary tameflare-dataplane
// with the channel on descriptor 3; it confines itself further before it
// says Hello (confine_self). The supervisor keeps its end of the channel,
// asks Ping for the watchdog, and learns of the exit from a pidfd.
#pragma once

#include "common/error.h"
#include "common/unique_fd.h"
#include "daemon/ipc/channel.h"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::dataplane {

class DataPlaneError : public Error {
public:
    using Error::Error;
};

struct DataPlaneOptions {
    std::filesystem::path binary;  // tameflare-dataplane
    uid_t uid = 65534;             // its own user (sysusers.d: tameflare-dataplane)
    gid_t gid = 65534;
    std::filesystem::path cgroup;       // created when missing
    std::vector<std::string> readable;  // what it may read (confine_self)
    std::chrono::milliseconds hello_timeout{5000};
};

class DataPlaneProcess {
public:
    // Starts it and waits for its Hello. Throws DataPlaneError with what
    // failed (clone3, the cgroup, dropping privileges, execve, confinement,
    // a wrong protocol) and how to fix it.
    explicit DataPlaneProcess(const DataPlaneOptions& options);
    // Ends it: closes the channel (its signal to exit), waits a moment,
    // then kills it.
    ~DataPlaneProcess();
    DataPlaneProcess(const DataPlaneProcess&) = delete;
    DataPlaneProcess& operator=(const DataPlaneProcess&) = delete;

    [[nodiscard]] pid_t pid() const { return pid_; }
    [[nodiscard]] int pidfd() const { return pidfd_.get(); }
    [[nodiscard]] const ipc::Channel& channel() const { return channel_; }

    // Asks Ping and waits for the Pong: false when it does not answer in
    // time or is gone (the watchdog's question).
    bool ping(std::chrono::milliseconds timeout);
    // Its exit status (the code, or 128 + signal) once it has exited; reaps it.
    std::optional<int> exited();
    // Ends it at once (a data plane that sent what it must not).
    void kill();
    // The channel, for a Link to speak on from now on (ping() is then false).
    ipc::Channel take_channel() { return std::move(channel_); }

private:
    // The next frame within `timeout`; nullopt when none came or the channel closed.
    std::optional<ipc::Frame> next(std::chrono::milliseconds timeout) const;

    pid_t pid_ = -1;
    UniqueFd pidfd_;
    ipc::Channel channel_{UniqueFd()};
    std::uint64_t nonce_ = 0;
    std::optional<int> status_;
};

}  // namespace tameflare::dataplane
