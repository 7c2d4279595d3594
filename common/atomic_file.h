// Files written whole or not at all: the bytes go to "<file>.tmp" (created
// exclusively, never through a link), are synced, and the temporary is then
// renamed over the file and the directory synced. A reader sees the old file
// or the new one, never a part; a crash leaves at most the temporary.
#pragma once

#include "common/error.h"
#include "common/unique_fd.h"

#include <sys/types.h>

#include <array>
#include <filesystem>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string_view>

namespace tameflare {

// Writing failed: what, which file, and errno's words.
class FileError : public Error {
public:
    using Error::Error;
};

// The file exists and was not to be replaced (found at the start, or
// appeared while writing).
class FileExists : public FileError {
public:
    using FileError::FileError;
};

struct AtomicFileOptions {
    mode_t mode = 0644;
    bool replace = true;  // false: refuse when the file exists (FileExists), and never rename over one
    // A leftover temporary (a crash while writing) is removed first. For
    // files only this process writes, in a directory only it may write;
    // otherwise the leftover is refused, as another writer may hold it.
    bool take_over_temporary = false;
};

// A stream to the temporary; commit() makes it the file. Destroyed without
// commit(), the temporary is removed and the file is as it was.
class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path target, AtomicFileOptions options = {});
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile();

    std::ostream& stream() { return *stream_; }
    void commit();

private:
    class Buffer;
    [[noreturn]] void fail(const char* doing, int why) const;

    std::filesystem::path target_;
    std::filesystem::path temporary_;
    AtomicFileOptions options_;
    bool committed_ = false;
    UniqueFd fd_;
    std::unique_ptr<Buffer> buffer_;
    std::unique_ptr<std::ostream> stream_;
};

// The whole file in one call.
void write_file_atomically(const std::filesystem::path& target, std::string_view bytes, AtomicFileOptions options = {});

}  // namespace tameflare
