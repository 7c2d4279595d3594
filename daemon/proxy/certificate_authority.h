// The local certificate authority that TLS interception presents: an ECDSA
// P-256 CA created on first start in the state directory (key 0600), and leaf
// certificates minted per server name on demand and kept in a bounded LRU
// cache, so a repeat handshake costs no signing.
#pragma once

#include "daemon/proxy/openssl_handles.h"

#include <cstddef>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tameflare::proxy {

// A problem with the CA files that an operator can fix; what() says what,
// where and how.
class CaError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct LeafCertificate {
    X509Ptr certificate;
    EvpPkeyPtr key;  // a reference to the key every leaf shares
};

// Where the proxy gets the certificate it presents for a server name: the
// CA itself in one process, or (issue 24) the data plane's cache of leaves
// the supervisor signs. Thread-safe; throws when there can be none.
class LeafSource {
public:
    virtual ~LeafSource() = default;
    virtual std::shared_ptr<const LeafCertificate> leaf_for(std::string_view server_name) = 0;
};

// A bounded LRU cache of leaves over one key; `mint` certifies that key for a
// name on a miss (called outside the cache's lock; two threads minting the
// same name is harmless).
class LeafCache : public LeafSource {
public:
    using Mint = std::function<X509Ptr(const std::string& server_name, EVP_PKEY* key)>;
    LeafCache(EvpPkeyPtr key, Mint mint, std::size_t size);

    std::shared_ptr<const LeafCertificate> leaf_for(std::string_view server_name) override;
    [[nodiscard]] EVP_PKEY* key() const { return key_.get(); }
    [[nodiscard]] std::size_t cached() const;
    [[nodiscard]] std::size_t minted() const;

private:
    EvpPkeyPtr key_;  // one key for every leaf: minting is one signature
    Mint mint_;
    std::size_t size_;
    mutable std::mutex mutex_;
    using Entry = std::pair<std::string, std::shared_ptr<const LeafCertificate>>;
    std::list<Entry> lru_;  // most recent first
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
    std::size_t minted_ = 0;
};

// A fresh ECDSA P-256 key (a leaf key, the data plane's own).
EvpPkeyPtr new_leaf_key();

class CertificateAuthority : public LeafSource {
public:
    static constexpr std::size_t kDefaultCacheSize = 1024;

    // Loads ca.key and ca.crt from `directory`, or creates both when neither
    // exists. Throws CaError when one is missing, unreadable, readable by
    // others, corrupt, or when they do not belong together.
    static std::unique_ptr<CertificateAuthority> load_or_create(const std::filesystem::path& directory,
                                                                std::size_t cache_size = kDefaultCacheSize);

    // The leaf for a DNS name or an IP literal, from the cache or minted now.
    std::shared_ptr<const LeafCertificate> leaf_for(std::string_view server_name) override;
    // A leaf for `server_name` certifying `subject`'s public key (the data
    // plane's own key, issue 24). Throws CaError for a name no server has
    // (empty, longer than 253 bytes, or holding bytes outside a DNS name or
    // an IP literal).
    X509Ptr sign_leaf(std::string_view server_name, EVP_PKEY* subject) const;

    [[nodiscard]] X509* certificate() const { return certificate_.get(); }
    [[nodiscard]] std::string certificate_pem() const;
    [[nodiscard]] std::size_t cached() const;
    [[nodiscard]] std::size_t minted() const;

private:
    CertificateAuthority(EvpPkeyPtr key, X509Ptr certificate, std::size_t cache_size);
    X509Ptr mint(const std::string& server_name, EVP_PKEY* subject) const;

    EvpPkeyPtr key_;
    X509Ptr certificate_;
    LeafCache leaves_;
};

}  // namespace tameflare::proxy
