// Runs a program with pipes for stdout and stderr, for tests that drive the
// real binaries. RAII: the child is killed and reaped when the object dies.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace tameflare::testing {

class Subprocess {
public:
    explicit Subprocess(std::vector<std::string> argv) {
        int out[2];
        int err[2];
        if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        // Built before fork: the child of a threaded process may only call
        // async-signal-safe functions, and an allocation there can wait
        // forever for a lock another thread held at the fork (it did, under
        // AddressSanitizer).
        std::vector<char*> args;
        for (auto& arg : argv) args.push_back(arg.data());
        args.push_back(nullptr);
        pid_ = fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            dup2(out[1], STDOUT_FILENO);
            dup2(err[1], STDERR_FILENO);
            execv(args[0], args.data());
            _exit(127);
        }
        ::close(out[1]);
        ::close(err[1]);
        out_ = out[0];
        err_ = err[0];
    }
    Subprocess(const Subprocess&) = delete;
    Subprocess& operator=(const Subprocess&) = delete;
    ~Subprocess() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (out_ >= 0) ::close(out_);
        if (err_ >= 0) ::close(err_);
    }

    void signal(int number) const { ::kill(pid_, number); }
    [[nodiscard]] pid_t pid() const { return pid_; }

    // Reads until `needle` appears in stderr (after `from`) or the timeout passes.
    bool wait_for_stderr(const std::string& needle, std::size_t from = 0,
                         std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (stderr_.find(needle, from) == std::string::npos) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !pump(static_cast<int>(left.count()))) return false;
        }
        return true;
    }

    // Reads everything until the child exits; returns its exit status (or 128+signal).
    int wait() {
        while (pump(-1)) {
        }
        int status = 0;
        ::waitpid(pid_, &status, 0);
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

    const std::string& out() const { return stdout_; }
    const std::string& err() const { return stderr_; }

private:
    // One poll round; false once both pipes are closed or on timeout.
    bool pump(int timeout_ms) {
        pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
        if (out_ < 0 && err_ < 0) return false;
        const int ready = ::poll(fds, 2, timeout_ms);
        if (ready <= 0) return false;
        read_into(out_, fds[0].revents, stdout_);
        read_into(err_, fds[1].revents, stderr_);
        return out_ >= 0 || err_ >= 0;
    }
    static void read_into(int& fd, short revents, std::string& into) {
        if (fd < 0 || revents == 0) return;
        char buffer[4096];
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            into.append(buffer, static_cast<std::size_t>(n));
        } else {
            ::close(fd);
            fd = -1;
        }
    }

    pid_t pid_ = -1;
    bool exited_ = false;
    int out_ = -1;
    int err_ = -1;
    std::string stdout_;
    std::string stderr_;
};

struct Result {
    int status;
    std::string out;
    std::string err;
};

inline Result run(std::vector<std::string> argv) {
    Subprocess process(std::move(argv));
    const int status = process.wait();
    return {status, process.out(), process.err()};
}

}  // namespace tameflare::testing
