#include "daemon/dataplane/remote_plane.h"

#include "common/log.h"
#include "netns/namespaces.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <system_error>
#include <utility>

namespace tameflare::dataplane {

using namespace std::chrono_literals;

// One data plane process and its channel. Answers still owed are dropped,
// the link stops (its reader joined) before the host it calls goes, and the
// process is waited for last.
struct RemoteDataPlane::Running {
    std::unique_ptr<DataPlaneProcess> process;
    std::unique_ptr<Link> link;
    std::unique_ptr<DataPlaneHost> host;
    std::mutex mutex;
    std::string why;  // under mutex: why the channel closed
    std::atomic<std::uint64_t> nonce{0};

    // Whether it answers a Ping within `timeout` (it answers only while its loops do).
    bool answers(std::chrono::milliseconds timeout) {
        const auto sent = ++nonce;
        const auto pong = link->call(ipc::Ping{sent}, timeout);
        try {
            return pong && ipc::decode<ipc::Pong>(*pong).nonce == sent;
        } catch (const ipc::DecodeError&) {
            return false;
        }
    }
    std::string closed_because() {
        const std::lock_guard lock(mutex);
        return why;
    }

    Running() = default;
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
    ~Running() {
        if (host) host->detach();
        if (link) link->stop();
    }
};

namespace {

// A listener of the supervisor's own: adopted (a duplicate) or bound here.
UniqueFd listener(int given, const std::optional<Endpoint>& at, const char* what) {
    if (given >= 0) {
        UniqueFd copy(::fcntl(given, F_DUPFD_CLOEXEC, 3));
        if (!copy) throw std::system_error(errno, std::generic_category(), std::string("cannot duplicate the ") + what);
        return copy;
    }
    if (!at) return {};
    return netns::listen_tcp(*at);
}

KillSwitch message(const policy::KillSwitch& kill) {
    return KillSwitch{
        kill.all, {kill.gateways.begin(), kill.gateways.end()}, {kill.connectors.begin(), kill.connectors.end()}};
}

}  // namespace

RemoteDataPlane::RemoteDataPlane(RemoteDataPlaneOptions options) : options_(std::move(options)) {
    transparent_ =
        listener(options_.proxy.transparent_socket, options_.proxy.transparent_listen, "transparent listener");
    explicit_ = listener(options_.proxy.explicit_socket, options_.proxy.explicit_listen, "explicit listener");
    if (transparent_) transparent_endpoint_ = netns::local_endpoint(transparent_.get());
    if (explicit_) explicit_endpoint_ = netns::local_endpoint(explicit_.get());
    stop_event_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_event_) throw std::system_error(errno, std::generic_category(), "eventfd");
}

RemoteDataPlane::~RemoteDataPlane() {
    stop();
}

void RemoteDataPlane::start() {
    {
        std::lock_guard lock(mutex_);
        running_ = launch();
    }
    watcher_ = std::thread([this] { watch(); });
}

void RemoteDataPlane::stop() {
    if (watcher_.joinable()) {
        const std::uint64_t one = 1;
        (void)::write(stop_event_.get(), &one, sizeof one);
        watcher_.join();
    }
    std::shared_ptr<Running> running;
    {
        std::lock_guard lock(mutex_);
        running.swap(running_);
    }
    running.reset();  // the channel's end: it exits
}

std::shared_ptr<RemoteDataPlane::Running> RemoteDataPlane::launch() {
    auto running = std::make_shared<Running>();
    running->process = std::make_unique<DataPlaneProcess>(options_.process);
    Running* raw = running.get();
    running->link = std::make_unique<Link>(
        running->process->take_channel(), [raw](ipc::Frame& frame) { raw->host->handle(frame); },
        [raw](const std::string& why) {
            {
                std::lock_guard lock(raw->mutex);
                raw->why = why;
            }
            // A data plane that sent what it must not, or went quiet on its channel, is ended; the watcher starts
            // another.
            raw->process->kill();
        });
    running->host = std::make_unique<DataPlaneHost>(*running->link, options_.host);
    running->link->start();

    send_policy(*running);
    auto start = Start::from(options_.proxy);
    std::vector<int> fds;
    start.transparent = static_cast<bool>(transparent_);
    if (transparent_) fds.push_back(transparent_.get());
    start.explicit_proxy = static_cast<bool>(explicit_);
    if (explicit_) fds.push_back(explicit_.get());
    UniqueFd upstream_ca;
    if (!options_.proxy.upstream_ca_file.empty()) {
        upstream_ca = UniqueFd(::open(options_.proxy.upstream_ca_file.c_str(), O_RDONLY | O_CLOEXEC));
        if (!upstream_ca) {
            throw DataPlaneError(
                "cannot open proxy.upstream_ca_file " + options_.proxy.upstream_ca_file + ": " + std::strerror(errno),
                "name a PEM file of CA certificates that root can read");
        }
        fds.push_back(upstream_ca.get());
    }
    start.upstream_ca = static_cast<bool>(upstream_ca);
    UniqueFd map = options_.origin_map ? options_.origin_map() : UniqueFd();
    start.origin_map = static_cast<bool>(map);
    if (map) fds.push_back(map.get());
    running->link->post(start, fds);
    running->link->post(message(kill_));
    for (const auto& [tag, agent] : agents_) send_agent(*running, tag, agent);
    if (!accepting_) running->link->post(StopAccepting{});

    // Serving once it answers: Start was taken, the policy loaded.
    if (!running->answers(options_.process.hello_timeout)) {
        const auto why = running->closed_because();
        throw DataPlaneError("the data plane did not start serving" + (why.empty() ? "" : ": " + why),
                             "its log (the journal of tameflared.service) says why");
    }
    ++started_;
    return running;
}

std::shared_ptr<RemoteDataPlane::Running> RemoteDataPlane::current() const {
    std::lock_guard lock(mutex_);
    return running_;
}

void RemoteDataPlane::send_policy(Running& running) {
    const auto snapshot = options_.config->snapshot();
    PolicyDocuments documents;
    if (snapshot->sources) {
        documents.connectors = snapshot->sources->connectors;
        documents.gateways = snapshot->sources->gateways;
        documents.overrides.assign(snapshot->sources->enforcement.begin(), snapshot->sources->enforcement.end());
    }
    for (const auto& part : split_policy(++generation_, encode(documents))) running.link->post(part);
}

void RemoteDataPlane::send_agent(Running& running, std::uint64_t tag, const Agent& agent) {
    std::vector<int> fds;
    for (const auto* fd : {&agent.listener, &agent.dns_udp, &agent.dns_tcp}) {
        if (*fd) fds.push_back(fd->get());
    }
    running.link->post(RegisterAgent{tag, agent.gateway, agent.agent, static_cast<bool>(agent.listener),
                                     static_cast<bool>(agent.dns_udp), static_cast<bool>(agent.dns_tcp)},
                       fds);
}

void RemoteDataPlane::watch() {
    auto backoff = 100ms;
    for (;;) {
        auto running = current();
        pollfd ready[2] = {{stop_event_.get(), POLLIN, 0}, {running ? running->process->pidfd() : -1, POLLIN, 0}};
        const int r = ::poll(ready, 2, running ? -1 : static_cast<int>(backoff.count()));
        if (r < 0 && errno == EINTR) continue;
        if ((ready[0].revents & POLLIN) != 0) return;
        if (running && (ready[1].revents & POLLIN) == 0) continue;
        if (running) {
            const auto status = running->process->exited().value_or(-1);
            const auto why = running->closed_because();
            const auto reason =
                "the data plane (pid " + std::to_string(running->process->pid()) + ") ended with " +
                (status > 128 ? "signal " + std::to_string(status - 128) : "exit status " + std::to_string(status)) +
                (why.empty() ? "" : " (" + why + ")");
            log(LogLevel::error, reason + "; starting another",
                {{"DATAPLANE_PID", std::to_string(running->process->pid())},
                 {"EXIT_STATUS", std::to_string(status)},
                 {"HINT", "agents' connections fail closed until it serves again; its own log says why it ended"}});
            {
                std::lock_guard lock(mutex_);
                running_.reset();
            }
            running.reset();
            if (options_.on_lost) options_.on_lost(reason);
        }
        try {
            std::lock_guard lock(mutex_);
            running_ = launch();
            backoff = 100ms;
            log(LogLevel::notice, "the data plane serves again",
                {{"DATAPLANE_PID", std::to_string(running_->process->pid())}});
        } catch (const std::exception& error) {
            log(LogLevel::error, std::string("cannot start the data plane again: ") + error.what(),
                {{"HINT", "tameflared tries again; agents' connections fail closed meanwhile"}});
            backoff = std::min<std::chrono::milliseconds>(backoff * 2, 5s);
        }
    }
}

pid_t RemoteDataPlane::pid() const {
    const auto running = current();
    return running ? running->process->pid() : 0;
}

void RemoteDataPlane::policy_changed() {
    std::lock_guard lock(mutex_);
    if (running_) send_policy(*running_);
}

void RemoteDataPlane::set_kill_switch(const policy::KillSwitch& kill_switch) {
    std::lock_guard lock(mutex_);
    kill_ = kill_switch;
    if (running_) running_->link->post(message(kill_));
}

policy::KillSwitch RemoteDataPlane::kill_switch() const {
    std::lock_guard lock(mutex_);
    return kill_;
}

proxy::ProxyCounters RemoteDataPlane::counters() const {
    const auto running = current();
    if (running) {
        try {
            if (const auto reply = running->link->call(CountersRequest{}, 1s)) {
                const auto counters = ipc::decode<Counters>(*reply);
                std::lock_guard lock(mutex_);
                last_counters_ = {counters.connections_open, counters.connections_total, counters.requests,
                                  counters.held};
            }
        } catch (const ipc::DecodeError&) {
            running->link->shut_down();  // a data plane that answers nonsense is ended
        }
    }
    std::lock_guard lock(mutex_);
    return last_counters_;
}

void RemoteDataPlane::serve_agent(proxy::AgentSockets sockets) {
    std::lock_guard lock(mutex_);
    auto& agent = agents_[sockets.tag];
    agent = Agent{sockets.gateway, sockets.agent, std::move(sockets.listener), std::move(sockets.dns_udp),
                  std::move(sockets.dns_tcp)};
    if (running_) send_agent(*running_, sockets.tag, agent);
}

void RemoteDataPlane::stop_agent(std::uint64_t tag) {
    std::lock_guard lock(mutex_);
    if (agents_.erase(tag) == 0) return;
    if (running_) running_->link->post(UnregisterAgent{tag});
}

void RemoteDataPlane::stop_accepting() {
    std::lock_guard lock(mutex_);
    accepting_ = false;
    if (running_) running_->link->post(StopAccepting{});
}

bool RemoteDataPlane::responsive(std::chrono::milliseconds timeout) const {
    const auto running = current();
    return running && running->answers(timeout);
}

}  // namespace tameflare::dataplane
