#include "daemon/dataplane/process.h"

#include "daemon/dataplane/confine.h"
#include "daemon/ipc/messages.h"
#include "netns/cgroup.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace tameflare::dataplane {
namespace {

constexpr int kChannelFd = 3;
constexpr int kErrorFd = 4;

// What the child reports when it cannot become the data plane.
struct ChildFailure {
    int error = 0;
    char step[64] = {};
};

[[noreturn]] void child_failed(int error, const char* step) {
    ChildFailure failure{error, {}};
    std::strncpy(failure.step, step, sizeof failure.step - 1);
    (void)!::write(kErrorFd, &failure, sizeof failure);
    ::_exit(127);
}

// Between clone3 and execve: nothing that allocates.
[[noreturn]] void become_data_plane(pid_t parent, int channel, int error_pipe, uid_t uid, gid_t gid, const char* binary,
                                    char* const* argv, char* const* envp) {
    // Above the places they go first: either may be 3 or 4 already.
    const int error_high = ::fcntl(error_pipe, F_DUPFD_CLOEXEC, 10);
    const int channel_high = ::fcntl(channel, F_DUPFD_CLOEXEC, 10);
    if (error_high < 0 || ::dup3(error_high, kErrorFd, O_CLOEXEC) < 0) ::_exit(126);
    // dup2 leaves the new descriptor open across execve.
    if (channel_high < 0 || ::dup2(channel_high, kChannelFd) < 0) child_failed(errno, "the channel descriptor");
    // Nothing else of the supervisor's crosses execve.
    if (::syscall(SYS_close_range, kErrorFd + 1, ~0U, 0) != 0) child_failed(errno, "close_range");
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || ::dup2(null, STDIN_FILENO) < 0) child_failed(errno, "stdin");
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const char* step = "";
    if (const int error = drop_privileges(uid, gid, step); error != 0) child_failed(error, step);
    // It dies with the supervisor's thread that started it (changing
    // credentials cleared any earlier setting), so that a killed daemon's
    // data plane never holds the listeners its successor binds.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_failed(errno, "prctl(PR_SET_PDEATHSIG)");
    if (::getppid() != parent) child_failed(ESRCH, "the supervisor ended");
    ::execve(binary, argv, envp);
    child_failed(errno, "execve");
}

}  // namespace

DataPlaneProcess::DataPlaneProcess(const DataPlaneOptions& options) {
    netns::ensure_cgroup(options.cgroup);
    const UniqueFd cgroup(::open(options.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup) {
        throw DataPlaneError(
            "cannot open the data plane's cgroup " + options.cgroup.string() + ": " + std::strerror(errno),
            "tameflared needs a delegated cgroup (Delegate=yes) or root");
    }
    auto [mine, theirs] = ipc::Channel::pair();
    int report[2] = {-1, -1};
    if (::pipe2(report, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    UniqueFd report_read(report[0]);
    UniqueFd report_write(report[1]);

    // Everything the child needs, made before it exists.
    std::vector<std::string> arguments{options.binary.string()};
    for (const auto& path : options.readable) {
        arguments.emplace_back("--read");
        arguments.push_back(path);
    }
    std::vector<char*> argv;
    argv.reserve(arguments.size() + 1);
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    std::vector<std::string> environment;
    if (const char* stream = std::getenv("JOURNAL_STREAM"); stream != nullptr) {
        environment.push_back(std::string("JOURNAL_STREAM=") + stream);
    }
    std::vector<char*> envp;
    envp.reserve(environment.size() + 1);
    for (auto& variable : environment) envp.push_back(variable.data());
    envp.push_back(nullptr);
    const std::string binary = options.binary.string();

    const pid_t parent = ::getpid();
    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(cgroup.get());
    // No signal handler of the supervisor may run in the child before execve.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        become_data_plane(parent, theirs.fd(), report_write.get(), options.uid, options.gid, binary.c_str(),
                          argv.data(), envp.data());
    }
    const int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (pid < 0) {
        throw DataPlaneError(
            "cannot start the data plane: clone3 into " + options.cgroup.string() + ": " + std::strerror(clone_error),
            "clone3 with CLONE_INTO_CGROUP needs Linux 5.7+ and a cgroup2 directory");
    }
    pid_ = static_cast<pid_t>(pid);
    pidfd_ = UniqueFd(pidfd);
    theirs.release().reset();
    report_write.reset();
    ChildFailure failure;
    const auto got = ::read(report_read.get(), &failure, sizeof failure);
    if (got == static_cast<ssize_t>(sizeof failure)) {
        exited();
        throw DataPlaneError(
            "cannot start the data plane " + binary + ": " + failure.step + ": " + std::strerror(failure.error),
            "check that the binary exists and that its user exists (sysusers.d)");
    }
    channel_ = std::move(mine);
    const auto hello_frame = next(options.hello_timeout);
    if (!hello_frame) {
        const auto status = exited();
        throw DataPlaneError("the data plane did not say hello" +
                                 (status ? " (it exited with " + std::to_string(*status) + ")" : std::string()),
                             "its log says why; it refuses to run unconfined");
    }
    const auto hello = ipc::decode<ipc::Hello>(*hello_frame);
    if (hello.protocol != ipc::kProtocolVersion || hello.pid != static_cast<std::uint32_t>(pid_)) {
        throw DataPlaneError("the data plane speaks protocol " + std::to_string(hello.protocol) + " (build " +
                                 hello.build + "), not " + std::to_string(ipc::kProtocolVersion),
                             "tameflared and tameflare-dataplane come from the same package; reinstall it");
    }
}

DataPlaneProcess::~DataPlaneProcess() {
    channel_.release().reset();  // its end of file: it exits
    pollfd exit{pidfd_.get(), POLLIN, 0};
    if (!status_ && pidfd_ && ::poll(&exit, 1, 2000) == 0) {
        (void)::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    }
    if (!status_ && pidfd_) {
        siginfo_t info{};
        (void)::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED);
    }
}

std::optional<ipc::Frame> DataPlaneProcess::next(std::chrono::milliseconds timeout) const {
    pollfd ready{channel_.fd(), POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        const int r = ::poll(&ready, 1, static_cast<int>(left.count()));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return std::nullopt;
        return channel_.receive(true);
    }
}

bool DataPlaneProcess::ping(std::chrono::milliseconds timeout) {
    if (!channel_.open() || exited()) return false;
    const auto nonce = ++nonce_;
    try {
        ipc::send(channel_, ipc::Ping{nonce});
        const auto frame = next(timeout);
        return frame && ipc::decode<ipc::Pong>(*frame).nonce == nonce;
    } catch (const std::exception&) {
        return false;
    }
}

void DataPlaneProcess::kill() {
    if (!status_ && pidfd_) (void)::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

std::optional<int> DataPlaneProcess::exited() {
    if (status_ || !pidfd_) return status_;
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG) != 0 ||
        info.si_pid == 0) {
        return std::nullopt;
    }
    status_ = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    return status_;
}

}  // namespace tameflare::dataplane
