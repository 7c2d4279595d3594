#include "daemon/dataplane/service.h"

#include "common/log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <system_error>
#include <utility>

namespace tameflare::dataplane {
namespace {

// The next descriptor of a frame, where the message's flag says one came.
UniqueFd take(std::vector<UniqueFd>& fds, std::size_t& next, bool present, const char* what) {
    if (!present) return {};
    if (next >= fds.size()) throw ipc::DecodeError(std::string("no descriptor came for ") + what, 0);
    return std::move(fds[next++]);
}

void no_more(const std::vector<UniqueFd>& fds, std::size_t used) {
    if (used != fds.size()) throw ipc::DecodeError("descriptors the message does not name", 0);
}

// A file the supervisor opened for the data plane, whole (at most 16 MiB).
std::string read_all(int fd, const char* what) {
    constexpr std::size_t kMax = std::size_t{16} << 20;
    std::string out;
    char buffer[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::system_error(errno, std::generic_category(), std::string("cannot read ") + what);
        if (n == 0) return out;
        out.append(buffer, static_cast<std::size_t>(n));
        if (out.size() > kMax) throw ipc::DecodeError(std::string(what) + " is larger than 16 MiB", 0);
    }
}

}  // namespace

DataPlaneService::DataPlaneService(ipc::Channel channel)
    : link_(
          std::move(channel), [this](ipc::Frame& frame) { handle(frame); },
          [this](const std::string& why) {
              approvals_.deny_all("the data plane lost its supervisor: " + why);
              finish(EXIT_SUCCESS, why);
          }),
      traffic_(link_),
      approvals_(link_),
      credentials_(link_),
      leaves_(link_) {}

DataPlaneService::~DataPlaneService() {
    link_.stop();  // no frame is handled from here on
    if (plane_) plane_->stop();
}

int DataPlaneService::run() {
    link_.start();
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [this] { return code_.has_value(); });
    return *code_;
}

void DataPlaneService::finish(int code, const std::string& why) {
    {
        std::lock_guard lock(mutex_);
        if (code_) return;
        code_ = code;
    }
    if (code != EXIT_SUCCESS) {
        log(LogLevel::error, "the data plane stops: " + why,
            {{"HINT", "tameflared starts another; its journal says why this one ended"}});
    }
    finished_.notify_all();
}

void DataPlaneService::handle(ipc::Frame& frame) {
    try {
        std::size_t used = 0;
        switch (static_cast<Type>(frame.type)) {
            case Type::policy_part:
                if (auto blob = assembly_.add(ipc::decode<PolicyPart>(frame))) load_policy(*blob);
                no_more(frame.fds, used);
                return;
            case Type::start:
                if (plane_) throw ipc::DecodeError("a second Start", 0);
                start(ipc::decode<Start>(frame), frame.fds);
                return;
            default: break;
        }
        if (frame.type == static_cast<std::uint16_t>(ipc::Type::ping)) {
            const auto ping = ipc::decode<ipc::Ping>(frame);
            // The watchdog's question: answered only while every event loop answers.
            if (!plane_ || plane_->responsive(std::chrono::milliseconds(1000)))
                link_.reply(frame.seq, ipc::Pong{ping.nonce});
            return;
        }
        if (!plane_) throw ipc::DecodeError("message type " + std::to_string(frame.type) + " before Start", 0);
        switch (static_cast<Type>(frame.type)) {
            case Type::kill_switch: {
                const auto message = ipc::decode<KillSwitch>(frame);
                policy::KillSwitch kill;
                kill.all = message.all;
                kill.gateways.insert(message.gateways.begin(), message.gateways.end());
                kill.connectors.insert(message.connectors.begin(), message.connectors.end());
                plane_->set_kill_switch(kill);
                break;
            }
            case Type::register_agent: {
                const auto message = ipc::decode<RegisterAgent>(frame);
                proxy::AgentSockets sockets{message.tag, message.gateway, message.agent, {}, {}, {}};
                sockets.listener = take(frame.fds, used, message.listener, "the agent's listener");
                sockets.dns_udp = take(frame.fds, used, message.dns_udp, "the agent's DNS socket");
                sockets.dns_tcp = take(frame.fds, used, message.dns_tcp, "the agent's DNS listener");
                no_more(frame.fds, used);
                plane_->serve_agent(std::move(sockets));
                return;
            }
            case Type::unregister_agent: plane_->stop_agent(ipc::decode<UnregisterAgent>(frame).tag); break;
            case Type::answer: approvals_.answered(ipc::decode<Answer>(frame)); break;
            case Type::stop_accepting:
                (void)ipc::decode<StopAccepting>(frame);
                plane_->stop_accepting();
                break;
            case Type::counters_request: {
                (void)ipc::decode<CountersRequest>(frame);
                const auto counters = plane_->counters();
                link_.reply(frame.seq, Counters{counters.connections_open, counters.connections_total,
                                                counters.requests, counters.held});
                break;
            }
            default:
                throw ipc::DecodeError("message type " + std::to_string(frame.type) + " the data plane does not take",
                                       0);
        }
        no_more(frame.fds, used);
    } catch (const std::exception& error) {
        finish(EXIT_FAILURE, std::string("a message from the supervisor: ") + error.what());
        link_.shut_down();
    }
}

void DataPlaneService::start(const Start& start, std::vector<UniqueFd>& fds) {
    std::size_t used = 0;
    auto options = start.options();
    auto transparent = take(fds, used, start.transparent, "the transparent listener");
    auto explicit_proxy = take(fds, used, start.explicit_proxy, "the explicit listener");
    const auto upstream_ca = take(fds, used, start.upstream_ca, "the upstream CA file");
    auto map = take(fds, used, start.origin_map, "the origins map");
    no_more(fds, used);
    if (upstream_ca) options.upstream_ca_pem = read_all(upstream_ca.get(), "the upstream CA file");
    options.transparent_socket = transparent ? transparent.get() : -1;
    options.explicit_socket = explicit_proxy ? explicit_proxy.get() : -1;
    if (map) {
        origins_.emplace(std::move(map));
        // Older kernels refuse a look-up without CAP_BPF: the supervisor answers those.
        if (!origins_->lookups_permitted()) {
            log(LogLevel::info, "this kernel refuses the data plane's origin look-ups; the supervisor answers them");
            origins_.reset();
        }
    }
    proxy::ProxyServices services{&config_, &leaves_, nullptr, &credentials_, &approvals_, &traffic_};
    // The proxy serves duplicates of the listeners: these close when Start is done.
    plane_ = std::make_unique<LocalDataPlane>(
        std::move(options), services,
        [this](std::uint64_t cookie, const Endpoint& client) { return origin(cookie, client); });
    plane_->start();
}

void DataPlaneService::load_policy(const std::string& blob) {
    const auto documents = decode_policy(blob);
    policy::EnforcementOverrides overrides(documents.overrides.begin(), documents.overrides.end());
    auto result = policy::load_config(documents.connectors, documents.gateways, overrides);
    if (!result.ok()) {
        const auto& first = result.errors.front();
        throw ipc::DecodeError("the supervisor's policy does not load here: " + first.file + ": " + first.message, 0);
    }
    config_.publish(std::move(result.config));
    if (plane_) plane_->policy_changed();
}

std::optional<bpf::Origin> DataPlaneService::origin(std::uint64_t netns_cookie, const Endpoint& client) {
    if (origins_) return origins_->lookup(netns_cookie, client);
    const auto reply = link_.call(OriginRequest{netns_cookie, client}, kCallTimeout);
    if (!reply) return std::nullopt;
    const auto answer = ipc::decode<OriginAnswer>(*reply);
    if (!answer.found) return std::nullopt;
    return bpf::Origin{answer.destination, answer.agent};
}

}  // namespace tameflare::dataplane
