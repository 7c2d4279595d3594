// The data plane process's side of its channel (issue 24): what the
// supervisor says, done to a LocalDataPlane whose services (records,
// approvals, credentials, leaves, origins where the map cannot be read) are
// requests back over the same channel. tameflare-dataplane's main() runs one
// after it confined itself and said Hello.
//
// The supervisor's word is trusted more than an agent's, not blindly: a
// frame that does not decode, a message out of turn (an agent before Start)
// or a policy that does not load ends the process. A data plane in doubt
// stops; the supervisor starts another, and agents' connections fail closed
// in between.
#pragma once

#include "daemon/dataplane/link.h"
#include "daemon/dataplane/local.h"
#include "daemon/dataplane/remote.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace tameflare::dataplane {

class DataPlaneService {
public:
    explicit DataPlaneService(ipc::Channel channel);
    ~DataPlaneService();
    DataPlaneService(const DataPlaneService&) = delete;
    DataPlaneService& operator=(const DataPlaneService&) = delete;

    // Serves until the supervisor goes away (EXIT_SUCCESS) or the channel
    // brings what the data plane does not take (EXIT_FAILURE, logged).
    int run();

private:
    void handle(ipc::Frame& frame);  // on the link's reader thread
    void start(const Start& start, std::vector<UniqueFd>& fds);
    void load_policy(const std::string& blob);
    std::optional<bpf::Origin> origin(std::uint64_t netns_cookie, const Endpoint& client);
    void finish(int code, const std::string& why);

    Link link_;
    RemoteTraffic traffic_;
    RemoteApprovals approvals_;
    RemoteCredentials credentials_;
    RemoteLeaves leaves_;
    policy::ConfigStore config_;
    PolicyAssembly assembly_;                // on the reader thread
    std::optional<bpf::OriginMap> origins_;  // null: ask the supervisor
    std::unique_ptr<LocalDataPlane> plane_;  // from Start on

    std::mutex mutex_;
    std::condition_variable finished_;
    std::optional<int> code_;  // under mutex_
};

}  // namespace tameflare::dataplane
