// The real tameflare-dataplane started the way the supervisor starts it
// (daemon/dataplane/process.h): in its own cgroup, as its own user (nobody
// here), with no capability, no_new_privs and its seccomp filter in force, as
// /proc/PID/status shows from outside; it answers the watchdog's Ping, and
// its death is seen. Root only; skips with the reason otherwise.
#include "daemon/dataplane/process.h"

#include "netns/cgroup.h"
#include "tests/support/files.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace tameflare::dataplane {
namespace {

using namespace std::chrono_literals;

using testing::proc_status;

class DataPlaneProcessTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "starting the data plane as its own user needs root";
        cgroup_ = netns::cgroup2_mount() / ("tf-dataplane-test-" + std::to_string(::getpid()));
        options_.binary = TAMEFLARE_DATAPLANE_BINARY;
        options_.cgroup = cgroup_;
        options_.readable = {"/etc/ssl"};
    }
    void TearDown() override {
        if (cgroup_.empty()) return;
        try {
            netns::Cgroup::open(cgroup_).remove(5s);
        } catch (const std::exception&) {
        }
    }

    std::filesystem::path cgroup_;
    DataPlaneOptions options_;
};

TEST_F(DataPlaneProcessTest, ItRunsAsItsUserInItsCgroupWithNoCapabilityAndItsFilterAndAnswersPing) {
    DataPlaneProcess plane(options_);
    const auto status = proc_status(plane.pid());
    EXPECT_EQ(status.at("Uid"), "65534");
    EXPECT_EQ(status.at("Gid"), "65534");
    for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
        EXPECT_EQ(status.at(set), "0000000000000000") << set;
    }
    EXPECT_EQ(status.at("NoNewPrivs"), "1");
    EXPECT_EQ(status.at("Seccomp"), "2");
    EXPECT_EQ(netns::process_cgroup(plane.pid(), plane.pidfd()),
              "/" + cgroup_.lexically_relative(netns::cgroup2_mount()).string());
    EXPECT_TRUE(plane.ping(2s));
    EXPECT_TRUE(plane.ping(2s));
    EXPECT_FALSE(plane.exited());
}

TEST_F(DataPlaneProcessTest, ItsDeathIsSeenAndItNoLongerAnswers) {
    DataPlaneProcess plane(options_);
    ASSERT_EQ(::syscall(SYS_pidfd_send_signal, plane.pidfd(), SIGKILL, nullptr, 0), 0);
    std::optional<int> status;
    for (int i = 0; i < 200 && !status; ++i) {
        status = plane.exited();
        if (!status) std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 128 + SIGKILL);
    EXPECT_FALSE(plane.ping(500ms));
}

TEST_F(DataPlaneProcessTest, AMissingBinaryOrUserIsRefusedWithTheStepThatFailed) {
    options_.binary = "/nonexistent/tameflare-dataplane";
    try {
        DataPlaneProcess plane(options_);
        FAIL() << "a data plane from nowhere";
    } catch (const DataPlaneError& error) {
        EXPECT_NE(std::string(error.what()).find("execve: No such file or directory"), std::string::npos)
            << error.what();
        EXPECT_FALSE(error.hint().empty());
    }
    // Root as the data plane's user is refused before execve.
    options_.binary = TAMEFLARE_DATAPLANE_BINARY;
    options_.uid = 0;
    options_.gid = 0;
    try {
        DataPlaneProcess plane(options_);
        FAIL() << "a data plane running as root";
    } catch (const DataPlaneError& error) {
        EXPECT_NE(std::string(error.what()).find("the uid check"), std::string::npos) << error.what();
    }
}

}  // namespace
}  // namespace tameflare::dataplane
