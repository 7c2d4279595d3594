// The kernel's word on a unix socket's peer (here: this process itself).
#include "common/caller.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace tameflare {
namespace {

TEST(Caller, APeerIsWhatTheKernelSays) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    const UniqueFd mine(pair[0]);
    const UniqueFd theirs(pair[1]);
    const Caller caller = peer_credentials(mine.get());
    EXPECT_EQ(caller.pid, ::getpid());
    EXPECT_EQ(caller.uid, ::getuid());
    EXPECT_EQ(caller.gid, ::getgid());
    EXPECT_EQ(static_cast<int>(caller.groups.size()), ::getgroups(0, nullptr));
    if (caller.pidfd() >= 0) {  // SO_PEERPIDFD, Linux 6.5
        std::ifstream info("/proc/self/fdinfo/" + std::to_string(caller.pidfd()));
        std::string line;
        bool found = false;
        while (std::getline(info, line)) found |= line == "Pid:\t" + std::to_string(::getpid());
        EXPECT_TRUE(found) << "the pidfd is not this process's";
    }
    // Copies share the pidfd; it is closed with the last one.
    const Caller copy = caller;
    EXPECT_EQ(copy.pidfd(), caller.pidfd());
}

TEST(Caller, WhatIsNoSocketThrows) {
    EXPECT_THROW(peer_credentials(-1), std::system_error);
    const UniqueFd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(file);
    EXPECT_THROW(peer_credentials(file.get()), std::system_error);
}

TEST(Caller, DescribesItselfAsActorsAreNamed) {
    Caller caller;
    caller.uid = 1000;
    caller.pid = 42;
    EXPECT_EQ(caller.describe(), "uid:1000 pid:42");
    caller.via = "rest";
    caller.method = "POST /v1/reload";
    EXPECT_EQ(caller.describe(), "uid:1000 pid:42 via rest (POST /v1/reload)");
}

}  // namespace
}  // namespace tameflare
