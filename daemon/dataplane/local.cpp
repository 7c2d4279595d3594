#include "daemon/dataplane/local.h"

#include "daemon/proxy/liveness.h"
#include "netns/namespaces.h"

#include <utility>

namespace tameflare::dataplane {

std::vector<std::string> resolvable_names(const policy::Gateway& gateway) {
    std::vector<std::string> names;
    for (const auto& connector : gateway.connectors) {
        names.insert(names.end(), connector.domains.begin(), connector.domains.end());
    }
    for (const auto& rule : gateway.tcp) {
        if (!rule.host.empty()) names.push_back(rule.host);
    }
    return names;
}

proxy::TrafficRecord dns_record(const std::string& gateway, const std::string& agent, const dns::UnlistedName& name) {
    proxy::TrafficRecord record;
    record.time = std::chrono::system_clock::now();
    record.gateway = gateway;
    record.agent = agent;
    record.connector = "dns";
    record.action = "dns.query";
    record.method = name.type == dns::kTypeA      ? "A"
                    : name.type == dns::kTypeAaaa ? "AAAA"
                                                  : "TYPE" + std::to_string(name.type);
    record.host = name.name;
    record.decision = name.answered ? "would_deny" : "denied";
    record.reason = name.answered ? "no connector or tcp rule of gateway " + gateway +
                                        " lists this name: answered (not enforced at this level)"
                                  : "no connector or tcp rule of gateway " + gateway + " lists this name: REFUSED";
    if (name.suppressed != 0) {
        record.reason += "; " + std::to_string(name.suppressed) + " more unlisted queries were not recorded (budget)";
    }
    record.forwarded = name.answered;
    return record;
}

LocalDataPlane::LocalDataPlane(proxy::ProxyOptions options, proxy::ProxyServices services, bpf::OriginSource origins)
    : config_(*services.config), origins_(std::move(origins)) {
    services.origins = this;
    server_ = std::make_unique<proxy::ProxyServer>(std::move(options), services);
}

LocalDataPlane::~LocalDataPlane() {
    stop();
}

void LocalDataPlane::start() {
    server_->start();
    thread_ = std::thread([this] {
        auto guard = boost::asio::make_work_guard(io_);
        io_.run();
    });
}

void LocalDataPlane::stop() {
    std::map<std::uint64_t, Agent> agents;
    {
        std::lock_guard lock(mutex_);
        agents.swap(agents_);
    }
    for (auto& [tag, agent] : agents) {
        if (agent.dns) agent.dns->stop();
    }
    agents.clear();  // each stub waits for its coroutines
    io_.stop();
    if (thread_.joinable()) thread_.join();
    server_->stop();
}

void LocalDataPlane::configure(const policy::Config& config, Agent& agent) const {
    const policy::Gateway* gateway = config.gateway(agent.gateway);
    agent.dns->set_allowed(gateway ? resolvable_names(*gateway) : std::vector<std::string>{});
    agent.dns->set_answer_unlisted(gateway != nullptr && gateway->enforcement != policy::Enforcement::full);
}

void LocalDataPlane::policy_changed() {
    const auto snapshot = config_.snapshot();
    std::lock_guard lock(mutex_);
    for (auto& [tag, agent] : agents_) {
        if (agent.dns) configure(*snapshot, agent);
    }
}

void LocalDataPlane::serve_agent(proxy::AgentSockets sockets) {
    Agent agent{sockets.gateway, sockets.agent, nullptr};
    if (sockets.dns_udp || sockets.dns_tcp) {
        agent.dns = std::make_unique<dns::DnsStub>(io_, std::move(sockets.dns_udp), std::move(sockets.dns_tcp),
                                                   std::vector<std::string>{}, server_->resolver());
        configure(*config_.snapshot(), agent);
        agent.dns->on_unlisted([server = server_.get(), gateway = agent.gateway, id = agent.agent](
                                   const dns::UnlistedName& name) { server->record(dns_record(gateway, id, name)); });
    }
    auto* stub = agent.dns.get();
    {
        std::lock_guard lock(mutex_);
        agents_.insert_or_assign(sockets.tag, std::move(agent));
    }
    if (sockets.listener) server_->add_listener(std::move(sockets.listener), sockets.tag);
    if (stub != nullptr) stub->start();
}

void LocalDataPlane::stop_agent(std::uint64_t tag) {
    server_->remove_listener(tag);
    std::unique_ptr<dns::DnsStub> stub;
    {
        std::lock_guard lock(mutex_);
        const auto found = agents_.find(tag);
        if (found == agents_.end()) return;
        stub = std::move(found->second.dns);
        agents_.erase(found);
    }
    if (stub) stub->stop();
}

void LocalDataPlane::stop_accepting() {
    server_->stop_accepting();
}

bool LocalDataPlane::responsive(std::chrono::milliseconds timeout) const {
    if (!server_->responsive(timeout)) return false;
    if (!thread_.joinable()) return true;
    boost::asio::io_context* loop = &io_;
    return proxy::loops_answer(std::span(&loop, 1), timeout);
}

std::optional<proxy::Origin> LocalDataPlane::lookup(const proxy::AcceptedConnection& connection) {
    if (!origins_) return std::nullopt;
    const auto origin = origins_(netns::socket_netns_cookie(connection.socket), connection.client);
    if (!origin || connection.listener != origin->agent) return std::nullopt;
    std::lock_guard lock(mutex_);
    const auto found = agents_.find(origin->agent);
    if (found == agents_.end()) return std::nullopt;
    return proxy::Origin{origin->destination, found->second.gateway, found->second.agent};
}

}  // namespace tameflare::dataplane
