// A listening TCP socket on 127.0.0.1 with a port the kernel picked, for
// tests that put a real client on the other end.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace tameflare::testing {

class LoopbackListener {
public:
    LoopbackListener() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::listen(fd_, 16) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            throw std::runtime_error("cannot listen on 127.0.0.1");
        }
        port_ = ntohs(address.sin_port);
    }
    LoopbackListener(const LoopbackListener&) = delete;
    LoopbackListener& operator=(const LoopbackListener&) = delete;
    ~LoopbackListener() { ::close(fd_); }

    [[nodiscard]] int port() const { return port_; }
    [[nodiscard]] std::string port_text() const { return std::to_string(port_); }

    // The next connection's fd (the caller closes it), or -1 after `timeout`
    // or once shutdown() was called.
    int accept(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
        pollfd ready{fd_, POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return -1;
        return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    }
    // Wakes a thread waiting in accept().
    void shutdown() const { ::shutdown(fd_, SHUT_RDWR); }

private:
    int fd_ = -1;
    int port_ = 0;
};

}  // namespace tameflare::testing
