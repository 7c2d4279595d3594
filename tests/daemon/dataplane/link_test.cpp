// The data plane's services over a real channel (daemon/dataplane/link.h,
// remote.h, host.h), both sides in this process: records and commits reach
// the supervisor's sink in order and a commit waits for its word; held
// requests reach the real approval queue and its answers come back; a
// credential is asked for by name; a leaf over the data plane's own key is
// signed by the real CA. And when the supervisor goes away mid-request,
// everything that waits fails closed: the commit is an error, the held
// request is denied, the credential and the leaf are not there.
#include "daemon/dataplane/link.h"
#include "daemon/dataplane/host.h"
#include "daemon/dataplane/remote.h"
#include "daemon/proxy/approvals.h"
#include "support/temp_dir.h"

#include <openssl/x509v3.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tameflare::dataplane {
namespace {

using namespace std::chrono_literals;

// The supervisor's store as the host sees it: records kept in order; a
// commit answered with `verdict` (as the store's writer would, on its own thread).
class KeptTraffic : public proxy::TrafficSink {
public:
    void record(proxy::TrafficRecord record) override {
        std::lock_guard lock(mutex_);
        kept_.push_back("record " + record.request_id);
        changed_.notify_all();
    }
    void commit(proxy::TrafficRecord record, std::function<void(std::string error)> done) override {
        {
            std::lock_guard lock(mutex_);
            kept_.push_back("commit " + record.request_id);
        }
        changed_.notify_all();
        std::thread([done = std::move(done), verdict = verdict] { done(verdict); }).detach();
    }
    std::vector<std::string> wait_for(std::size_t count) {
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, 5s, [&] { return kept_.size() >= count; });
        return kept_;
    }
    std::string verdict;

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<std::string> kept_;
};

class Vault : public proxy::CredentialSource {
public:
    std::optional<std::string> credential(std::string_view name) override {
        if (name == "github") return "ghp_from_the_vault";
        return std::nullopt;
    }
};

proxy::TrafficRecord named(std::string id) {
    proxy::TrafficRecord out;
    out.request_id = std::move(id);
    out.gateway = "ci";
    return out;
}

class LinkTest : public ::testing::Test {
protected:
    void SetUp() override {
        ca_ = proxy::CertificateAuthority::load_or_create(dir_.path() / "ca");
        auto [supervisor_end, plane_end] = ipc::Channel::pair();
        supervisor_.emplace(
            std::move(supervisor_end), [this](const ipc::Frame& frame) { host_->handle(frame); },
            [](const std::string&) {});
        host_.emplace(*supervisor_, HostServices{&traffic_, &queue_, &vault_, ca_.get(), {}});
        plane_.emplace(
            std::move(plane_end),
            [this](const ipc::Frame& frame) {
                if (frame.type == static_cast<std::uint16_t>(Type::answer)) {
                    approvals_->answered(ipc::decode<Answer>(frame));
                }
            },
            [this](const std::string& why) { approvals_->deny_all("the supervisor is gone: " + why); });
        approvals_.emplace(*plane_);
        remote_traffic_.emplace(*plane_, 5ms);
        supervisor_->start();
        plane_->start();
    }

    // The data plane first, then the supervisor's reader, then what each calls.
    void TearDown() override {
        remote_traffic_.reset();
        plane_.reset();  // its end calls approvals_ (deny_all), which goes after it
        approvals_.reset();
        host_->detach();  // what the store still owes goes nowhere
        supervisor_.reset();
        host_.reset();
    }

    // The supervisor's process ends: its end of the channel closes.
    void supervisor_goes_away() {
        supervisor_->shut_down();
        for (int i = 0; i < 500 && !plane_->closed(); ++i) std::this_thread::sleep_for(1ms);
        ASSERT_TRUE(plane_->closed());
    }

    testing::TempDir dir_{"tf-link"};
    std::unique_ptr<proxy::CertificateAuthority> ca_;
    KeptTraffic traffic_;
    proxy::ApprovalQueue queue_;
    Vault vault_;
    std::optional<Link> supervisor_;
    std::optional<DataPlaneHost> host_;
    std::optional<Link> plane_;
    std::optional<RemoteApprovals> approvals_;
    std::optional<RemoteTraffic> remote_traffic_;
};

std::string commit(RemoteTraffic& traffic, std::string id) {
    std::promise<std::string> result;
    traffic.commit(named(std::move(id)), [&result](std::string error) { result.set_value(std::move(error)); });
    auto future = result.get_future();
    if (future.wait_for(5s) != std::future_status::ready) return "(no answer)";
    return future.get();
}

TEST_F(LinkTest, RecordsAndCommitsReachTheStoreInOrderAndACommitWaitsForItsWord) {
    remote_traffic_->record(named("r1"));
    remote_traffic_->record(named("r2"));
    EXPECT_EQ(commit(*remote_traffic_, "c3"), "");
    traffic_.verdict = "disk full";
    EXPECT_EQ(commit(*remote_traffic_, "c4"), "disk full");
    remote_traffic_->record(named("r5"));
    EXPECT_EQ(traffic_.wait_for(5),
              (std::vector<std::string>{"record r1", "record r2", "commit c3", "commit c4", "record r5"}));
}

TEST_F(LinkTest, ManyRecordsCrossInFramesOfTheirOwnSize) {
    for (int i = 0; i < 3000; ++i) {
        auto record = named("r" + std::to_string(i));
        record.path = std::string(200, 'p');
        remote_traffic_->record(std::move(record));
    }
    remote_traffic_->flush();
    const auto kept = traffic_.wait_for(3000);
    ASSERT_EQ(kept.size(), 3000u);
    EXPECT_EQ(kept.front(), "record r0");
    EXPECT_EQ(kept.back(), "record r2999");
}

TEST_F(LinkTest, AHeldRequestWaitsInTheSupervisorsQueueAndItsAnswerComesBack) {
    std::promise<proxy::ApprovalAnswer> answered;
    proxy::ApprovalRequest request;
    request.id = "a1";
    request.gateway = "ci";
    request.action = "github.pr.merge";
    approvals_->submit(request, [&answered](proxy::ApprovalAnswer answer) { answered.set_value(std::move(answer)); });
    for (int i = 0; i < 500 && queue_.size() == 0; ++i) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(queue_.size(), 1u);
    EXPECT_EQ(queue_.pending()[0].action, "github.pr.merge");
    ASSERT_TRUE(queue_.answer("a1", {true, "fine", "uid:1000 pid:9 via D-Bus"}));
    auto future = answered.get_future();
    ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
    const auto answer = future.get();
    EXPECT_TRUE(answer.approved);
    EXPECT_EQ(answer.actor, "uid:1000 pid:9 via D-Bus");

    // Withdrawn on the data plane's side: gone from the queue too.
    request.id = "a2";
    approvals_->submit(request, [](proxy::ApprovalAnswer) { ADD_FAILURE() << "a withdrawn request was answered"; });
    for (int i = 0; i < 500 && queue_.size() == 0; ++i) std::this_thread::sleep_for(1ms);
    approvals_->withdraw("a2");
    for (int i = 0; i < 500 && queue_.size() != 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(queue_.size(), 0u);
}

TEST_F(LinkTest, ACredentialIsAskedForByNameAndALeafIsSignedOverTheDataPlanesKey) {
    RemoteCredentials credentials(*plane_);
    EXPECT_EQ(credentials.credential("github"), "ghp_from_the_vault");
    EXPECT_EQ(credentials.credential("nothing"), std::nullopt);

    RemoteLeaves leaves(*plane_);
    const auto leaf = leaves.leaf_for("api.github.com");
    EXPECT_EQ(X509_check_private_key(leaf->certificate.get(), leaf->key.get()), 1);
    EXPECT_EQ(X509_check_issued(ca_->certificate(), leaf->certificate.get()), X509_V_OK);
    EXPECT_EQ(leaves.leaf_for("api.github.com"), leaf);
    EXPECT_THROW(leaves.leaf_for("not a name"), std::runtime_error);
}

TEST_F(LinkTest, WhenTheSupervisorGoesAwayEverythingThatWaitsFailsClosed) {
    std::promise<proxy::ApprovalAnswer> answered;
    proxy::ApprovalRequest request;
    request.id = "a3";
    approvals_->submit(request, [&answered](proxy::ApprovalAnswer answer) { answered.set_value(std::move(answer)); });
    for (int i = 0; i < 500 && queue_.size() == 0; ++i) std::this_thread::sleep_for(1ms);
    supervisor_goes_away();

    auto future = answered.get_future();
    ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
    const auto answer = future.get();
    EXPECT_FALSE(answer.approved);
    EXPECT_NE(answer.note.find("the supervisor is gone"), std::string::npos) << answer.note;

    EXPECT_NE(commit(*remote_traffic_, "c9").find("the supervisor is gone"), std::string::npos);
    EXPECT_EQ(RemoteCredentials(*plane_).credential("github"), std::nullopt);
    RemoteLeaves leaves(*plane_);
    EXPECT_THROW(leaves.leaf_for("api.github.com"), std::runtime_error);
    // A request submitted after the end is denied at once.
    bool denied = false;
    request.id = "a4";
    approvals_->submit(request, [&denied](proxy::ApprovalAnswer late) { denied = !late.approved; });
    EXPECT_TRUE(denied);
}

TEST_F(LinkTest, AFrameTheDataPlaneDoesNotSendClosesTheChannel) {
    // What a data plane an agent took over might try: a supervisor's message.
    plane_->post(KillSwitch{true, {}, {}});
    for (int i = 0; i < 500 && !supervisor_->closed(); ++i) std::this_thread::sleep_for(1ms);
    EXPECT_TRUE(supervisor_->closed());
}

}  // namespace
}  // namespace tameflare::dataplane
