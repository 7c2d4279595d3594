#include "daemon/agents_internal.h"

namespace tameflare::daemon {

net::awaitable<void> Agents::Impl::serve(std::shared_ptr<Descriptor> client) {
    std::shared_ptr<Agent> agent;
    for (;;) {
        error_code error;
        co_await client->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error) break;
        std::optional<netns::Message> message;
        try {
            message = netns::receive_message(client->native_handle());
        } catch (const std::system_error& failure) {
            if (failure.code() == std::errc::resource_unavailable_try_again) continue;
            break;
        } catch (const std::exception& failure) {
            reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", "use tf run"}});
            break;
        }
        if (!message) break;  // tf run is gone
        // Whatever tf run (or anyone) sends: a field of the wrong type is an
        // error answered to the sender, never an exception that ends the daemon.
        bool done = false;
        try {
            const json request = json::parse(message->text, nullptr, false);
            const std::string type = request.is_object() ? request.value("type", "") : "";
            if (type == "launch" && !agent) {
                try {
                    const auto peer = peer_credentials(client->native_handle());
                    agent = launch(peer, request, message->fds);
                    agent->client = client;
                    reply(*client, json{{"type", "started"},
                                        {"agent", agent->id},
                                        {"pid", agent->process->pid()},
                                        {"notes", agent->notes},
                                        {"filesystem", agent->filesystem}});
                    agent->exit_watch = std::make_unique<Descriptor>(io, ::dup(agent->process->pidfd()));
                    net::co_spawn(io, watch_exit(agent), net::detached);
                } catch (const Error& failure) {  // LaunchError, or the authorizer's ControlError
                    log(LogLevel::warning, std::string("launch refused: ") + failure.what(),
                        {{"GATEWAY", request.value("gateway", "")}, {"HINT", failure.hint()}});
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", failure.hint()}});
                    done = true;
                }
            } else if ((type == "enforce" || type == "release") && !agent) {
                try {
                    const auto peer = peer_credentials(client->native_handle());
                    reply(*client, type == "enforce" ? enforce(peer, request) : release(peer, request));
                } catch (const json::exception& failure) {
                    reply(*client, json{{"type", "error"},
                                        {"message", std::string("malformed request: ") + failure.what()},
                                        {"hint", "use tf enforce"}});
                } catch (const Error& failure) {
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", failure.hint()}});
                } catch (const std::exception& failure) {
                    reply(*client, json{{"type", "error"}, {"message", failure.what()}, {"hint", ""}});
                }
                done = true;
            } else if (type == "signal" && agent && agent->process) {
                const int number = request.value("signal", 0);
                if (std::find(kForwardable.begin(), kForwardable.end(), number) != kForwardable.end()) {
                    agent->process->signal(number);
                }
            } else {
                reply(*client, json{{"type", "error"}, {"message", "unexpected message"}, {"hint", "use tf run"}});
                done = true;
            }
        } catch (const std::exception& failure) {
            reply(*client, json{{"type", "error"},
                                {"message", std::string("malformed request: ") + failure.what()},
                                {"hint", "use tf run"}});
            done = true;
        }
        if (done) break;
    }
    // tf run went away (killed, or the terminal closed): its agent ends too.
    if (agent && agent->client == client && agents.count(agent->id) != 0) {
        agent->client.reset();
        if (agent->cgroup) agent->cgroup->kill();
    }
    error_code ignored;
    client->close(ignored);
}

net::awaitable<void> Agents::Impl::accept_loop() {
    for (;;) {
        error_code error;
        co_await listener->async_wait(Descriptor::wait_read, net::redirect_error(net::use_awaitable, error));
        if (error) co_return;
        const int fd = ::accept4(listener->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                net::steady_timer pause(io, std::chrono::milliseconds(100));  // out of descriptors: do not spin
                co_await pause.async_wait(net::redirect_error(net::use_awaitable, error));
            }
            continue;
        }
        auto client = std::make_shared<Descriptor>(io, fd);
        net::co_spawn(io, serve(client), net::detached);
    }
}

Agents::Agents(AgentsOptions options, const policy::ConfigStore& config, store::Store* store)
    : impl_(std::make_unique<Impl>(std::move(options), config, store)) {
    const auto& root = impl_->options.cgroup_root;
    const std::string own = netns::own_cgroup().string();
    if (is_within(own, root.string())) {
        throw std::runtime_error("tameflared runs inside its own agents' cgroup root " + root.string() +
                                 "; its connections would be redirected. Set agents.cgroup_root elsewhere");
    }
    netns::ensure_cgroup(root);
    impl_->enforcer.enforce(root);
    write_bundle(impl_->options.ca_bundle, impl_->options.ca_certificate_pem);
    write_resolv_conf(impl_->resolv_conf());
}

}  // namespace tameflare::daemon
