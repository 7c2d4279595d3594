// A directory made for one test and removed, with everything in it, after.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include <stdlib.h>

namespace tameflare::testing {

// Outside /tmp and /var/tmp, which agents see as their own.
inline const std::filesystem::path kAgentVisibleBase{"/var/lib/tameflare-tests"};

class TempDir {
public:
    explicit TempDir(std::string_view prefix = "tf-test") : TempDir(prefix, std::filesystem::temp_directory_path()) {}
    // Under `base` (made when missing): agents get a /tmp and /var/tmp of their own, so what a test shares with an
    // agent lives elsewhere (kAgentVisibleBase).
    TempDir(std::string_view prefix, const std::filesystem::path& base) {
        std::filesystem::create_directories(base);
        std::string pattern = (base / (std::string(prefix) + "-XXXXXX")).string();
        if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
        path_ = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace tameflare::testing
