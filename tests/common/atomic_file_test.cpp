// Files written whole or not at all, on a real file system.
#include "common/atomic_file.h"

#include "tests/support/temp_dir.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace tameflare {
namespace {

namespace fs = std::filesystem;

std::string contents(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

mode_t mode_of(const fs::path& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 07777;
}

TEST(AtomicFile, WritesTheFileWithItsModeWhateverTheUmask) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    const mode_t old = ::umask(077);
    write_file_atomically(file, "one\n", {.mode = 0644});
    ::umask(old);
    EXPECT_EQ(contents(file), "one\n");
    EXPECT_EQ(mode_of(file), 0644u);
    EXPECT_FALSE(fs::exists(file.string() + ".tmp"));
}

TEST(AtomicFile, ReplacesAnExistingFileOnlyWhenAsked) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    write_file_atomically(file, "old");
    EXPECT_THROW(write_file_atomically(file, "new", {.replace = false}), FileExists);
    EXPECT_EQ(contents(file), "old");
    write_file_atomically(file, "new");
    EXPECT_EQ(contents(file), "new");
}

TEST(AtomicFile, WithoutCommitTheOldFileStaysAndNoTemporaryIsLeft) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    write_file_atomically(file, "old");
    {
        AtomicFile partial(file);
        partial.stream() << std::string(200000, 'x');  // more than the buffer: bytes reach the temporary
        EXPECT_TRUE(fs::exists(file.string() + ".tmp"));
        EXPECT_EQ(contents(file), "old");
    }
    EXPECT_EQ(contents(file), "old");
    EXPECT_FALSE(fs::exists(file.string() + ".tmp"));
}

TEST(AtomicFile, AFileThatAppearsWhileWritingIsKeptUnlessReplacing) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    AtomicFile late(file, {.replace = false});
    late.stream() << "mine";
    std::ofstream(file) << "theirs";  // another program's file, made meanwhile
    EXPECT_THROW(late.commit(), FileExists);
    EXPECT_EQ(contents(file), "theirs");
}

TEST(AtomicFile, ALeftoverTemporaryIsRefusedWithAHintOrTakenOverWhenAsked) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    std::ofstream(file.string() + ".tmp") << "left over";
    try {
        write_file_atomically(file, "new");
        ADD_FAILURE() << "a leftover temporary was written through";
    } catch (const FileError& error) {
        EXPECT_NE(std::string(error.what()).find(file.string() + ".tmp"), std::string::npos) << error.what();
        EXPECT_NE(error.hint().find("remove it"), std::string::npos) << error.hint();
    }
    EXPECT_FALSE(fs::exists(file));
    write_file_atomically(file, "new", {.take_over_temporary = true});
    EXPECT_EQ(contents(file), "new");
}

TEST(AtomicFile, NeverWritesThroughALinkAtTheTemporaryName) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "out";
    const fs::path victim = dir.path() / "victim";
    std::ofstream(victim) << "precious";
    fs::create_symlink(victim, file.string() + ".tmp");
    EXPECT_THROW(write_file_atomically(file, "new"), FileError);
    EXPECT_EQ(contents(victim), "precious");
}

TEST(AtomicFile, AMissingDirectoryIsAnErrorNamingTheFile) {
    testing::TempDir dir;
    const fs::path file = dir.path() / "no" / "out";
    try {
        write_file_atomically(file, "x");
        ADD_FAILURE() << "written into a missing directory";
    } catch (const FileError& error) {
        EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find("No such file"), std::string::npos) << error.what();
    }
}

}  // namespace
}  // namespace tameflare
