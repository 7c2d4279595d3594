#include "daemon/agents_internal.h"

namespace tameflare::daemon {

Agents::~Agents() {
    stop();
}

void Agents::start(proxy::DataPlane& proxy) {
    impl_->proxy = &proxy;
    const auto& path = impl_->options.launch_socket;
    std::error_code error;
    fs::create_directories(path.parent_path(), error);
    ::chmod(path.parent_path().c_str(), 0755);
    fs::remove(path, error);
    UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof address.sun_path) {
        throw std::runtime_error("launch socket path too long: " + path.string());
    }
    std::memcpy(address.sun_path, path.c_str(), path.string().size());
    if (!socket || ::bind(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(socket.get(), 64) != 0) {
        throw std::system_error(errno, std::generic_category(), "cannot listen on the launch socket " + path.string());
    }
    // Anyone may ask; the daemon decides by the caller's kernel credentials.
    ::chmod(path.c_str(), 0666);
    impl_->listener = std::make_unique<Descriptor>(impl_->io, socket.release());
    net::co_spawn(impl_->io, impl_->accept_loop(), net::detached);
    net::post(impl_->io, [this] { impl_->adopt_running(); });
    impl_->thread = std::thread([this] {
        auto guard = net::make_work_guard(impl_->io);
        impl_->io.run();
    });
}

void Agents::stop() {
    if (!impl_->thread.joinable()) return;
    std::promise<void> done;
    net::post(impl_->io, [this, &done] {
        error_code ignored;
        if (impl_->listener) impl_->listener->close(ignored);
        auto running = impl_->agents;
        for (auto& [id, agent] : running) {
            if (agent->enforced_unit) {  // a service's cgroup is not ours to end: its connects fail until we are back
                impl_->undo_registration(*agent);
                continue;
            }
            if (agent->exit_watch) agent->exit_watch->cancel(ignored);
            if (agent->cgroup) agent->cgroup->kill();
            const int status = agent->process ? agent->process->wait() : 255;
            impl_->finish(*agent, status);
        }
        done.set_value();
    });
    done.get_future().wait();
    impl_->io.stop();
    impl_->thread.join();
}

bool Agents::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->thread.joinable()) return true;
    boost::asio::io_context* loop = &impl_->io;
    return proxy::loops_answer(std::span(&loop, 1), timeout);
}

void Agents::reload() {
    if (!impl_->thread.joinable()) return;
    net::post(impl_->io, [this] {
        for (auto& [id, agent] : impl_->agents) {
            impl_->apply_unix_policy(*agent);
        }
    });
}

std::optional<bpf::Origin> Agents::origin(std::uint64_t netns_cookie, const Endpoint& client) const {
    return impl_->enforcer.origin(netns_cookie, client);
}

UniqueFd Agents::origin_map_readonly() const {
    return impl_->enforcer.origin_map_readonly();
}

std::vector<AgentInfo> Agents::list() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->published;
}

bool Agents::is_agent_cgroup(const std::string& cgroup) const {
    return impl_->inside_agents(cgroup);
}

Agents::StopResult Agents::stop_agent(const std::string& id) {
    if (!impl_->thread.joinable()) return StopResult::unknown;
    std::promise<StopResult> result;
    net::post(impl_->io, [this, &id, &result] {
        const auto found = impl_->agents.find(id);
        if (found == impl_->agents.end()) {
            result.set_value(StopResult::unknown);
        } else if (found->second->enforced_unit) {
            result.set_value(StopResult::enforced_unit);
        } else {
            // The exit watch sees the end and reports it as for any other exit.
            if (found->second->cgroup) found->second->cgroup->kill();
            result.set_value(StopResult::stopped);
        }
    });
    return result.get_future().get();
}

std::string Agents::launch(const Caller& peer, const json& request, std::vector<UniqueFd> fds) {
    if (!impl_->thread.joinable()) throw LaunchError("tameflared is not launching agents now", "");
    std::promise<std::string> result;
    net::post(impl_->io, [this, &peer, &request, &fds, &result] {
        // Whatever the request holds: a field of the wrong type is a refusal, not an escape.
        try {
            const auto agent = impl_->launch(peer, request, fds);
            agent->exit_watch = std::make_unique<Descriptor>(impl_->io, ::dup(agent->process->pidfd()));
            net::co_spawn(impl_->io, impl_->watch_exit(agent), net::detached);
            result.set_value(agent->id);
        } catch (const json::exception& failure) {
            result.set_exception(
                std::make_exception_ptr(LaunchError(std::string("malformed launch request: ") + failure.what(), "")));
        } catch (...) {
            result.set_exception(std::current_exception());
        }
    });
    return result.get_future().get();
}

void Agents::on_event(AgentObserver observer) {
    impl_->observer = std::move(observer);
}

fs::path default_cgroup_root() {
    return netns::cgroup2_mount() / "tameflare";
}

}  // namespace tameflare::daemon
