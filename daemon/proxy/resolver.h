// How the proxy finds upstream addresses: static host overrides from the
// configuration first (tests point api.github.com at a loopback server this
// way), then the system resolver. Answers are cached for a short time, and
// the cache also tells whether an address is one the daemon returned for a
// name, which is how a redirected connection's destination is checked
// against the name the agent sent (SNI, Host).
#pragma once

#include "daemon/proxy/address_policy.h"
#include "daemon/proxy/asio.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tameflare::proxy {

class Resolver {
public:
    using Clock = std::chrono::steady_clock;
    struct Options {
        std::map<std::string, std::vector<IpAddress>> hosts;  // lower-case name -> addresses
        bool use_system = true;                               // false: only `hosts` (tests)
        std::chrono::seconds cache_ttl{30};
        std::size_t cache_size = 4096;
    };

    explicit Resolver(Options options) : options_(std::move(options)) {}

    // The addresses of `name` (an IP literal resolves to itself); empty when
    // it has none. Never throws.
    net::awaitable<std::vector<IpAddress>> resolve(std::string name);

    // Records an answer given out by another part of the daemon (the DNS stub).
    void remember(const std::string& name, const std::vector<IpAddress>& addresses);

private:
    std::vector<IpAddress> cached(const std::string& name);

    Options options_;
    std::mutex mutex_;
    struct Entry {
        std::vector<IpAddress> addresses;
        Clock::time_point expires;
    };
    std::unordered_map<std::string, Entry> cache_;
};

}  // namespace tameflare::proxy
