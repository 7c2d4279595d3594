// Small helpers the integration tests share: a file's text, a SHA-256 in
// hex (gateways' proxy_token_sha256), and a process's /proc/PID/status.
#pragma once

#include <openssl/evp.h>
#include <sys/types.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>

namespace tameflare::testing {

inline std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), {}};
}

inline std::string sha256_hex(const std::string& text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
    std::string out;
    char hex[3];
    for (unsigned i = 0; i < length; ++i) {
        std::snprintf(hex, sizeof hex, "%02x", digest[i]);
        out += hex;
    }
    return out;
}

// Each line of /proc/PID/status by name: the first word of its value.
inline std::map<std::string, std::string> proc_status(pid_t pid) {
    std::map<std::string, std::string> out;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::istringstream value(line.substr(colon + 1));
        std::string first;
        value >> first;
        out[line.substr(0, colon)] = first;
    }
    return out;
}

}  // namespace tameflare::testing
