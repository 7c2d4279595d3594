#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace fs = std::filesystem;

namespace tameflare {

// An ostream buffer over a file descriptor; remembers the first write error.
class AtomicFile::Buffer : public std::streambuf {
public:
    explicit Buffer(int fd) : fd_(fd) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
    [[nodiscard]] int error() const { return error_; }

protected:
    int_type overflow(int_type c) override {
        if (!drain()) return traits_type::eof();
        if (!traits_type::eq_int_type(c, traits_type::eof())) {
            *pptr() = traits_type::to_char_type(c);
            pbump(1);
        }
        return traits_type::not_eof(c);
    }
    int sync() override { return drain() ? 0 : -1; }

private:
    bool drain() {
        const char* at = pbase();
        while (at < pptr() && error_ == 0) {
            const ssize_t written = ::write(fd_, at, static_cast<std::size_t>(pptr() - at));
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) {
                error_ = written < 0 ? errno : EIO;
                break;
            }
            at += written;
        }
        setp(buffer_.data(), buffer_.data() + buffer_.size());
        return error_ == 0;
    }

    int fd_;
    int error_ = 0;
    std::array<char, 1 << 16> buffer_{};
};

AtomicFile::AtomicFile(fs::path target, AtomicFileOptions options)
    : target_(std::move(target)), temporary_(target_.string() + ".tmp"), options_(options) {
    std::error_code error;
    if (!options_.replace && fs::exists(fs::symlink_status(target_, error))) {
        throw FileExists(target_.string() + " exists");
    }
    if (options_.take_over_temporary) fs::remove(temporary_, error);
    fd_ = UniqueFd(::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, options_.mode));
    if (!fd_) {
        const int why = errno;
        throw FileError("cannot create " + temporary_.string() + ": " + std::strerror(why),
                        why == EEXIST ? "another writer has it open, or one was interrupted: remove it" : "");
    }
    // The mode exactly, whatever the umask.
    if (::fchmod(fd_.get(), options_.mode) != 0) fail("setting the mode of", errno);
    buffer_ = std::make_unique<Buffer>(fd_.get());
    stream_ = std::make_unique<std::ostream>(buffer_.get());
}

AtomicFile::~AtomicFile() {
    if (!committed_) {
        std::error_code ignored;
        fs::remove(temporary_, ignored);
    }
}

void AtomicFile::commit() {
    stream_->flush();
    if (buffer_->error() != 0 || !*stream_) fail("writing", buffer_->error() != 0 ? buffer_->error() : EIO);
    if (::fsync(fd_.get()) != 0) fail("syncing", errno);
    if (::close(fd_.release()) != 0) fail("closing", errno);
    if (options_.replace) {
        if (std::rename(temporary_.c_str(), target_.c_str()) != 0) fail("renaming", errno);
    } else if (::renameat2(AT_FDCWD, temporary_.c_str(), AT_FDCWD, target_.c_str(), RENAME_NOREPLACE) != 0) {
        const int why = errno;
        if (why == EEXIST) throw FileExists(target_.string() + " appeared while it was written, and was kept");
        // A file system without RENAME_NOREPLACE: a plain rename after the check made at the start.
        if ((why != EINVAL && why != ENOSYS) || std::rename(temporary_.c_str(), target_.c_str()) != 0) {
            fail("renaming", errno);
        }
    }
    committed_ = true;
    // The rename itself is durable once the directory is synced.
    const fs::path directory = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    const UniqueFd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) ::fsync(dir.get());
}

void AtomicFile::fail(const char* doing, int why) const {
    throw FileError(std::string(doing) + " " + temporary_.string() + " failed: " + std::strerror(why),
                    why == ENOSPC ? "free space on its file system" : "");
}

void write_file_atomically(const fs::path& target, std::string_view bytes, AtomicFileOptions options) {
    AtomicFile file(target, options);
    file.stream().write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    file.commit();
}

}  // namespace tameflare
