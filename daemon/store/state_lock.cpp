#include "daemon/store/state_lock.h"

#include "daemon/store/database.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace tameflare::store {

namespace fs = std::filesystem;

fs::path StateLock::file(const fs::path& state_dir) {
    return state_dir / "tameflared.lock";
}

std::optional<StateLock> StateLock::try_acquire(const fs::path& state_dir) {
    fs::path path = file(state_dir);
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) {
        const int error = errno;
        std::string hint;
        if (error == ENOENT) {
            hint = "; is " + state_dir.string() + " the daemon's state directory (--state-dir, state_dir)?";
        } else if (error == EACCES || error == EPERM) {
            hint = "; run as the user tameflared runs as (usually root)";
        }
        throw StoreError("cannot open the state lock " + path.string() + ": " + std::strerror(error) + hint);
    }
    const int raw = fd.get();
    StateLock lock(std::move(fd), std::move(path));
    while (::flock(raw, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK) return std::nullopt;
        throw StoreError("cannot lock " + lock.path_.string() + ": " + std::strerror(errno));
    }
    return lock;
}

StateLock::StateLock(UniqueFd fd, fs::path path) : fd_(std::move(fd)), path_(std::move(path)) {}

}  // namespace tameflare::store
