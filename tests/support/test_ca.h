// A throwaway certificate authority for loopback upstreams: an ECDSA P-256
// CA whose ca.crt a client can trust, leaves it signs for DNS names and IP
// addresses, and self-signed leaves that no client trusts.
#pragma once

#include "daemon/proxy/openssl_handles.h"

#include <filesystem>
#include <string>
#include <vector>

namespace tameflare::testing {

struct LeafFiles {
    std::filesystem::path cert_file;  // PEM certificate
    std::filesystem::path key_file;   // PEM private key, mode 0600
};

class TestCa {
public:
    // Creates the CA ("TameFlare Test Upstream CA") and writes `dir`/ca.crt.
    explicit TestCa(const std::filesystem::path& dir);

    // A leaf signed by this CA, written to `dir`/`stem`.crt and `stem`.key:
    // subjectAltName DNS and IP entries, serverAuth, valid from an hour ago
    // for 30 days.
    [[nodiscard]] LeafFiles issue(std::vector<std::string> dns_names, std::vector<std::string> ips,
                                  const std::filesystem::path& dir, std::string stem) const;
    // The same leaf, but signed by its own key: untrusted by any client.
    [[nodiscard]] static LeafFiles self_signed(std::vector<std::string> dns_names, std::vector<std::string> ips,
                                               const std::filesystem::path& dir, std::string stem);

    [[nodiscard]] const std::filesystem::path& ca_file() const { return ca_file_; }

private:
    proxy::EvpPkeyPtr key_;
    proxy::X509Ptr certificate_;
    std::filesystem::path ca_file_;
};

}  // namespace tameflare::testing
