// Who owns the state directory: tameflared holds an exclusive flock on
// <state_dir>/tameflared.lock while it runs, and so does `tf vault rotate`,
// so a key rotation never runs under a daemon that keeps the old key. The
// kernel drops the lock when the holder exits, even after kill -9.
#pragma once

#include "common/unique_fd.h"

#include <filesystem>
#include <optional>

namespace tameflare::store {

class StateLock {
public:
    // The lock file of `state_dir`.
    static std::filesystem::path file(const std::filesystem::path& state_dir);

    // Takes the lock without waiting: nullopt when another holder has it
    // (another process, or another StateLock in this one: flock locks belong
    // to an open file description). Creates the file (0600) when absent;
    // throws StoreError when it cannot be opened or locked.
    static std::optional<StateLock> try_acquire(const std::filesystem::path& state_dir);

    // Moving transfers the lock; destroying releases it (closing the only
    // descriptor of the open file description drops the flock).
    StateLock(StateLock&& other) noexcept = default;
    StateLock& operator=(StateLock&& other) noexcept = default;
    StateLock(const StateLock&) = delete;
    StateLock& operator=(const StateLock&) = delete;
    ~StateLock() = default;

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    StateLock(UniqueFd fd, std::filesystem::path path);

    UniqueFd fd_;
    std::filesystem::path path_;
};

}  // namespace tameflare::store
