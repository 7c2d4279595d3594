#include "daemon/proxy/resolver.h"

#include <algorithm>

namespace tameflare::proxy {

std::vector<IpAddress> Resolver::cached(const std::string& name) {
    std::lock_guard lock(mutex_);
    const auto it = cache_.find(name);
    if (it == cache_.end()) return {};
    if (it->second.expires < Clock::now()) {
        cache_.erase(it);
        return {};
    }
    return it->second.addresses;
}

void Resolver::remember(const std::string& name, const std::vector<IpAddress>& addresses) {
    std::lock_guard lock(mutex_);
    if (cache_.size() >= options_.cache_size) {
        // Expired entries first; when none has expired, start over (bounded memory).
        const auto now = Clock::now();
        std::erase_if(cache_, [&](const auto& entry) { return entry.second.expires < now; });
        if (cache_.size() >= options_.cache_size) cache_.clear();
    }
    auto& entry = cache_[name];
    for (const auto& address : addresses) {
        if (std::find(entry.addresses.begin(), entry.addresses.end(), address) == entry.addresses.end()) {
            entry.addresses.push_back(address);
        }
    }
    entry.expires = Clock::now() + options_.cache_ttl;
}

net::awaitable<std::vector<IpAddress>> Resolver::resolve(std::string name) {
    if (auto literal = IpAddress::parse(name)) co_return std::vector<IpAddress>{*literal};
    if (const auto it = options_.hosts.find(name); it != options_.hosts.end()) co_return it->second;
    if (auto known = cached(name); !known.empty()) co_return known;
    if (!options_.use_system) co_return std::vector<IpAddress>{};

    tcp::resolver resolver(co_await net::this_coro::executor);
    boost::system::error_code error;
    const auto results = co_await resolver.async_resolve(name, "", net::redirect_error(net::use_awaitable, error));
    std::vector<IpAddress> addresses;
    if (!error) {
        for (const auto& result : results) {
            if (auto address = IpAddress::parse(result.endpoint().address().to_string())) {
                if (std::find(addresses.begin(), addresses.end(), *address) == addresses.end()) {
                    addresses.push_back(*address);
                }
            }
        }
        if (!addresses.empty()) remember(name, addresses);
    }
    co_return addresses;
}

}  // namespace tameflare::proxy
