#include "daemon/proxy/server.h"

#include "daemon/proxy/server_internal.h"

namespace tameflare::proxy {

using namespace detail;

std::string redact_target(std::string_view target) {
    const auto query = target.find('?');
    if (query == std::string_view::npos) return std::string(target);
    static constexpr std::string_view kSecret[] = {"token", "key",  "secret",    "password",   "passwd",  "signature",
                                                   "sig",   "auth", "code",      "credential", "session", "jwt",
                                                   "pass",  "pwd",  "client_id", "private"};
    std::string out(target.substr(0, query + 1));
    std::string_view rest = target.substr(query + 1);
    bool first = true;
    while (true) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        if (!first) out += '&';
        first = false;
        const auto eq = pair.find('=');
        const std::string name = ascii_lower(pair.substr(0, eq));
        const bool secret = std::any_of(std::begin(kSecret), std::end(kSecret),
                                        [&](std::string_view word) { return name.find(word) != std::string::npos; });
        if (secret && eq != std::string_view::npos) {
            out += pair.substr(0, eq + 1);
            out += "REDACTED";
        } else {
            out += pair;
        }
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
    return out;
}

// ---------------------------------------------------------------------------

net::awaitable<void> ProxyServer::Impl::accept_loop(tcp::acceptor& acceptor, Mode mode, std::uint64_t tag) {
    for (;;) {
        auto& context = pick_context();
        tcp::socket socket(context);
        error_code error;
        co_await acceptor.async_accept(socket, net::redirect_error(kToken, error));
        if (error == net::error::operation_aborted || !acceptor.is_open()) co_return;
        if (error) {  // EMFILE and the like: back off instead of spinning
            log(LogLevel::warning, "proxy accept failed: " + error.message());
            net::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(net::redirect_error(kToken, error));
            continue;
        }
        auto session = std::make_shared<Session>(shared_from_this(), std::move(socket), mode);
        session->set_listener(tag);
        session->enlist();
        net::co_spawn(context, session->run(session), net::detached);
    }
}

// Agents that stopped sending leave their windows behind: drop them every
// minute, so the limiter's memory follows the active agents.
net::awaitable<void> ProxyServer::Impl::purge_rate_limits() {
    net::steady_timer timer(*contexts.front());
    for (;;) {
        timer.expires_after(std::chrono::seconds(60));
        error_code error;
        co_await timer.async_wait(net::redirect_error(kToken, error));
        if (error) co_return;
        limiter.purge(Clock::now(), std::chrono::hours(1));
    }
}

namespace {

int select_http11(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
                  unsigned int in_length, void*) {
    static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, kHttp11, sizeof kHttp11, in, in_length) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;  // no http/1.1 offered: carry on without ALPN
}

tcp::acceptor bind(net::io_context& context, const Endpoint& endpoint) {
    tcp::acceptor acceptor(context);
    const auto address = to_asio(endpoint);
    acceptor.open(address.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(address);
    acceptor.listen(4096);
    return acceptor;
}

// Serves a listening TCP socket made elsewhere; the acceptor owns `socket`.
tcp::acceptor adopt(net::io_context& context, UniqueFd socket, const std::string& what) {
    int listening = 0;
    socklen_t length = sizeof listening;
    if (::getsockopt(socket.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || listening == 0) {
        throw std::system_error(EINVAL, std::generic_category(), "the " + what + " is not a listening socket");
    }
    sockaddr_storage local{};
    length = sizeof local;
    if (::getsockname(socket.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
        throw std::system_error(errno, std::generic_category(), "getsockname of the " + what);
    }
    tcp::acceptor acceptor(context);
    error_code error;
    acceptor.assign(local.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), socket.get(), error);
    if (error) throw std::system_error(error, "serving the " + what);
    socket.release();  // the acceptor owns it now
    return acceptor;
}

// A duplicate of a socket the caller keeps.
UniqueFd duplicate(int socket, const std::string& what) {
    UniqueFd copy(::fcntl(socket, F_DUPFD_CLOEXEC, 3));
    if (!copy) throw std::system_error(errno, std::generic_category(), "duplicating the " + what);
    return copy;
}

}  // namespace

ProxyServer::ProxyServer(ProxyOptions options, ProxyServices services)
    : impl_(std::make_shared<Impl>(std::move(options), services)) {
    if (impl_->services.config == nullptr || impl_->services.ca == nullptr) {
        throw std::invalid_argument("the proxy needs a configuration and a CA");
    }
    unsigned threads = impl_->options.threads;
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < threads; ++i) impl_->contexts.push_back(std::make_unique<net::io_context>(1));
    RAND_bytes(reinterpret_cast<unsigned char*>(&impl_->id_prefix), sizeof impl_->id_prefix);

    SSL_CTX* server = impl_->server_tls.native_handle();
    SSL_CTX_set_min_proto_version(server, TLS1_2_VERSION);
    SSL_CTX_set_mode(server, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(server, select_http11, nullptr);
    SSL_CTX_set_session_cache_mode(server, SSL_SESS_CACHE_OFF);

    SSL_CTX* client = impl_->client_tls.native_handle();
    SSL_CTX_set_min_proto_version(client, TLS1_2_VERSION);
    SSL_CTX_set_mode(client, SSL_MODE_RELEASE_BUFFERS);
    impl_->client_tls.set_verify_mode(net::ssl::verify_peer);
    if (!impl_->options.upstream_ca_pem.empty()) {
        impl_->client_tls.add_certificate_authority(net::buffer(impl_->options.upstream_ca_pem));
    } else if (impl_->options.upstream_ca_file.empty()) {
        impl_->client_tls.set_default_verify_paths();
    } else {
        impl_->client_tls.load_verify_file(impl_->options.upstream_ca_file);
    }
    static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(client, kAlpn, sizeof kAlpn);

    auto& first = *impl_->contexts.front();
    if (const int socket = impl_->options.transparent_socket; socket >= 0) {
        impl_->transparent.emplace(adopt(first, duplicate(socket, "transparent listener"), "transparent listener"));
    } else if (impl_->options.transparent_listen) {
        impl_->transparent.emplace(bind(first, *impl_->options.transparent_listen));
    }
    if (const int socket = impl_->options.explicit_socket; socket >= 0) {
        impl_->explicit_proxy.emplace(adopt(first, duplicate(socket, "explicit listener"), "explicit listener"));
    } else if (impl_->options.explicit_listen) {
        impl_->explicit_proxy.emplace(bind(first, *impl_->options.explicit_listen));
    }
}

ProxyServer::~ProxyServer() {
    stop();
}

void ProxyServer::start() {
    if (impl_->started) return;
    if (impl_->contexts.empty()) throw std::logic_error("a stopped proxy cannot be started again");
    impl_->started = true;
    auto& first = *impl_->contexts.front();
    if (impl_->transparent) {
        net::co_spawn(first, impl_->accept_loop(*impl_->transparent, Mode::transparent), net::detached);
    }
    if (impl_->explicit_proxy) {
        net::co_spawn(first, impl_->accept_loop(*impl_->explicit_proxy, Mode::explicit_plain), net::detached);
    }
    net::co_spawn(first, impl_->purge_rate_limits(), net::detached);
    for (auto& context : impl_->contexts) {
        impl_->threads.emplace_back([&context] {
            auto guard = net::make_work_guard(*context);
            context->run();
        });
    }
}

void ProxyServer::stop() {
    if (!impl_->started) return;
    stop_accepting();
    impl_->started = false;
    // Collected under the lock, closed outside it: the last reference to a
    // session may be dropped here, and ~Session takes the same lock.
    std::vector<std::shared_ptr<Session>> open_sessions;
    {
        std::lock_guard lock(impl_->sessions_mutex);
        for (const auto& weak : impl_->sessions) {
            if (auto session = weak.lock()) open_sessions.push_back(std::move(session));
        }
    }
    for (auto& session : open_sessions) {
        net::post(session->hold_timer().get_executor(), [session] { session->close_all(); });
    }
    open_sessions.clear();
    // Let traffic-log confirmations still on their way be delivered while the
    // contexts run, then refuse any later one.
    for (int waited = 0; impl_->lifeline->in_flight.load() > 0 && waited < 10000; ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
        std::lock_guard lock(impl_->lifeline->mutex);
        impl_->lifeline->alive = false;
    }
    for (auto& context : impl_->contexts) context->stop();
    for (auto& thread : impl_->threads) thread.join();
    impl_->threads.clear();
    // Destroying the contexts destroys the coroutines still suspended in them,
    // and with them the sessions (which hold the Impl: no cycle survives).
    impl_->transparent.reset();
    impl_->explicit_proxy.reset();
    impl_->contexts.clear();
}

void ProxyServer::add_listener(UniqueFd listening_socket, std::uint64_t tag) {
    if (tag == 0) throw std::invalid_argument("listener tag 0 is the main transparent listener's");
    if (impl_->contexts.empty()) throw std::logic_error("the proxy is stopped");
    auto& first = *impl_->contexts.front();
    auto acceptor = std::make_shared<tcp::acceptor>(adopt(first, std::move(listening_socket), "added listener"));
    net::post(first, [impl = impl_, acceptor, tag] {
        impl->added.emplace(tag, acceptor);
        net::co_spawn(
            *impl->contexts.front(),
            [impl, acceptor, tag]() -> net::awaitable<void> {
                co_await impl->accept_loop(*acceptor, Mode::transparent, tag);
            },
            net::detached);
    });
}

void ProxyServer::remove_listener(std::uint64_t tag) {
    if (impl_->contexts.empty()) return;
    net::post(*impl_->contexts.front(), [impl = impl_, tag] {
        const auto [begin, end] = impl->added.equal_range(tag);
        error_code ignored;
        for (auto it = begin; it != end; ++it) it->second->close(ignored);
        impl->added.erase(begin, end);
    });
}

std::optional<Endpoint> ProxyServer::transparent_endpoint() const {
    if (!impl_->transparent) return std::nullopt;
    return to_endpoint(impl_->transparent->local_endpoint());
}

std::optional<Endpoint> ProxyServer::explicit_endpoint() const {
    if (!impl_->explicit_proxy) return std::nullopt;
    return to_endpoint(impl_->explicit_proxy->local_endpoint());
}

void ProxyServer::set_kill_switch(const policy::KillSwitch& kill_switch) {
    auto next = std::make_shared<const policy::KillSwitch>(kill_switch);
    impl_->kill.store(next);
    std::vector<std::shared_ptr<Session>> severed;
    std::vector<std::shared_ptr<Session>> spared;  // released outside the lock: ~Session takes it
    {
        std::lock_guard lock(impl_->sessions_mutex);
        for (const auto& weak : impl_->sessions) {
            auto session = weak.lock();
            if (!session) continue;
            (session->in_scope(*next) ? severed : spared).push_back(std::move(session));
        }
    }
    spared.clear();
    for (auto& session : severed) {
        net::post(session->hold_timer().get_executor(), [session] { session->sever(); });
    }
}

Resolver& ProxyServer::resolver() {
    return impl_->resolver;
}

policy::KillSwitch ProxyServer::kill_switch() const {
    return *impl_->kill.load();
}

void ProxyServer::stop_accepting() {
    if (!impl_->started) return;
    net::post(*impl_->contexts.front(), [impl = impl_] {
        error_code ignored;
        if (impl->transparent) impl->transparent->close(ignored);
        if (impl->explicit_proxy) impl->explicit_proxy->close(ignored);
        for (auto& [tag, acceptor] : impl->added) acceptor->close(ignored);
        impl->added.clear();
    });
}

bool ProxyServer::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->started) return true;
    std::vector<net::io_context*> loops;
    for (const auto& context : impl_->contexts) loops.push_back(context.get());
    return loops_answer(loops, timeout);
}

void ProxyServer::record(TrafficRecord record) {
    if (record.request_id.empty()) record.request_id = impl_->new_request_id();
    impl_->record(std::move(record));
}

ProxyCounters ProxyServer::counters() const {
    return {impl_->open.load(), impl_->total.load(), impl_->requests.load(), impl_->held.load()};
}

}  // namespace tameflare::proxy
