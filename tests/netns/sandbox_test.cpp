// Which sandbox layers a launch gets on a kernel, and when it is refused:
// never run with weaker isolation than the gateway asked for, or than the
// kernel can give without a documented fallback.
#include "netns/sandbox.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tameflare::netns {
namespace {

// This machine's kind: Linux 6.7+ with Landlock ABI 6+.
const SandboxSupport kCurrent{7, "", true, true, true};
// Debian 12's stock 6.1: Landlock ABI 2, no cgroup/connect_unix.
const SandboxSupport kDebian12{2, "", false, true, true};
// A kernel booted without landlock in lsm=.
const SandboxSupport kNoLandlock{0, "", false, true, true};

LayerState state_of(const std::vector<SandboxLayer>& layers, const std::string& name) {
    for (const auto& layer : layers) {
        if (layer.name == name) return layer.state;
    }
    ADD_FAILURE() << "no layer " << name;
    return LayerState::fail;
}

const std::vector<std::string> kNothingExtra;

TEST(SandboxLayers, ACurrentKernelPassesEveryLayerInBothIsolations) {
    for (const char* isolation : {"netns", "cgroup"}) {
        SCOPED_TRACE(isolation);
        const auto layers = sandbox_layers(kCurrent, isolation);
        ASSERT_EQ(layers.size(), 6U);
        for (const auto& layer : layers) EXPECT_EQ(layer.state, LayerState::pass) << layer.name << ": " << layer.detail;
        const std::vector<std::string> all{"pid_namespace",      "landlock",    "landlock_scopes",
                                           "unix_socket_filter", "bind_filter", "seccomp"};
        EXPECT_EQ(sandbox_refusal(layers, all), "");
    }
}

TEST(SandboxLayers, Debian12sKernelGetsFallbacksAndRefusesWhatHasNone) {
    const auto own_network = sandbox_layers(kDebian12, "netns");
    EXPECT_EQ(state_of(own_network, "landlock"), LayerState::pass);
    EXPECT_EQ(state_of(own_network, "landlock_scopes"), LayerState::fallback);
    EXPECT_EQ(state_of(own_network, "unix_socket_filter"), LayerState::fallback);
    EXPECT_EQ(sandbox_refusal(own_network, kNothingExtra), "");
    // A gateway that requires the filter is refused, with the reason.
    const std::vector<std::string> filter{"unix_socket_filter"};
    const std::string refused = sandbox_refusal(own_network, filter);
    EXPECT_NE(refused.find("requires the sandbox layer unix_socket_filter"), std::string::npos) << refused;
    EXPECT_NE(refused.find("6.7"), std::string::npos) << refused;

    // In the host's network namespace nothing closes the host's abstract sockets: refused whatever is required.
    const auto shared_network = sandbox_layers(kDebian12, "cgroup");
    EXPECT_EQ(state_of(shared_network, "landlock_scopes"), LayerState::fail);
    const std::string no_abstract = sandbox_refusal(shared_network, kNothingExtra);
    EXPECT_NE(no_abstract.find("landlock_scopes"), std::string::npos) << no_abstract;
    EXPECT_NE(no_abstract.find("--isolation netns"), std::string::npos) << no_abstract;
}

TEST(SandboxLayers, WithoutLandlockEveryLaunchIsRefusedWithHowToEnableIt) {
    const auto layers = sandbox_layers(kNoLandlock, "netns");
    EXPECT_EQ(state_of(layers, "landlock"), LayerState::fail);
    const std::string refused = sandbox_refusal(layers, kNothingExtra);
    EXPECT_NE(refused.find("lsm="), std::string::npos) << refused;
    // The reason the kernel gave, where one was found (a container's seccomp filter).
    const SandboxSupport filtered{0, "a seccomp filter refuses the Landlock system calls", false, true, true};
    EXPECT_NE(sandbox_refusal(sandbox_layers(filtered, "netns"), kNothingExtra).find("seccomp filter refuses"),
              std::string::npos);
}

TEST(SandboxLayers, WithoutBindHooksOnlyTheOwnNetworkNamespaceStillHoldsListenersIn) {
    const SandboxSupport kNoBind{7, "", true, false, true};
    EXPECT_EQ(state_of(sandbox_layers(kNoBind, "netns"), "bind_filter"), LayerState::fallback);
    EXPECT_EQ(state_of(sandbox_layers(kNoBind, "cgroup"), "bind_filter"), LayerState::fail);
    EXPECT_NE(sandbox_refusal(sandbox_layers(kNoBind, "cgroup"), kNothingExtra), "");
}

TEST(SandboxLayers, WithoutSeccompFiltersEveryLaunchIsRefused) {
    const SandboxSupport kNoSeccomp{7, "", true, true, false};
    EXPECT_EQ(state_of(sandbox_layers(kNoSeccomp, "netns"), "seccomp"), LayerState::fail);
    EXPECT_NE(sandbox_refusal(sandbox_layers(kNoSeccomp, "netns"), kNothingExtra).find("CONFIG_SECCOMP_FILTER"),
              std::string::npos);
}

TEST(SandboxLayers, TheAgentIsToldItsLayersInOneLine) {
    EXPECT_EQ(describe_layers(sandbox_layers(kDebian12, "netns")),
              "pid_namespace=pass,landlock=pass,landlock_scopes=fallback,unix_socket_filter=fallback,"
              "bind_filter=pass,seccomp=pass");
    EXPECT_EQ(to_string(LayerState::fallback), "FALLBACK");
}

}  // namespace
}  // namespace tameflare::netns
