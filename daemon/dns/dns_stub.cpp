#include "daemon/dns/dns_stub.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <system_error>

namespace tameflare::dns {
namespace {

using proxy::IpAddress;
using error_code = boost::system::error_code;
using udp = net::ip::udp;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;
using Clock = std::chrono::steady_clock;
constexpr auto kToken = net::use_awaitable;

// What the stub gave out for an address: the key of the name_for() map.
using AddressKey = std::pair<bool, std::array<std::uint8_t, 16>>;

// The addresses an answer to `query` carries (same choice as dns::answer()).
std::vector<IpAddress> given_out(const dns::Query& query, const std::vector<IpAddress>& addresses) {
    std::vector<IpAddress> out;
    const bool want_v4 = query.question.type == dns::kTypeA;
    for (const auto& address : addresses) {
        if (address.v4 == want_v4 && out.size() < dns::kMaxAnswerRecords) out.push_back(address);
    }
    return out;
}

// The socket's family, so Asio can adopt an fd bound by someone else.
int family_of(int fd) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        throw std::system_error(errno, std::generic_category(), "getsockname on a DNS stub socket");
    }
    return address.ss_family;
}

// One TCP client: its socket and the timer that closes it when idle.
struct Connection {
    Connection(tcp::socket s, const Strand& strand) : socket(std::move(s)), timer(strand) {}
    tcp::socket socket;
    net::steady_timer timer;
    Clock::time_point deadline = Clock::now() + DnsStub::kTcpIdleTimeout;

    void close() {
        error_code ignored;
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
        timer.cancel();
    }
};

}  // namespace

struct DnsStub::State {
    State(net::io_context& context, UniqueFd udp_fd, UniqueFd tcp_fd, std::vector<std::string> names,
          NameResolver& name_resolver, std::uint32_t answer_ttl)
        : io(context),
          strand(net::make_strand(context)),
          udp_socket(strand),
          acceptor(strand),
          resolver(name_resolver),
          ttl(answer_ttl),
          allowed(std::move(names)) {
        // Adopted before any coroutine runs: no other thread touches them yet.
        if (udp_fd) {
            const auto protocol = family_of(udp_fd.get()) == AF_INET6 ? udp::v6() : udp::v4();
            udp_socket.assign(protocol, udp_fd.get());
            static_cast<void>(udp_fd.release());
        }
        if (tcp_fd) {
            const auto protocol = family_of(tcp_fd.get()) == AF_INET6 ? tcp::v6() : tcp::v4();
            acceptor.assign(protocol, tcp_fd.get());
            static_cast<void>(tcp_fd.release());
        }
    }

    bool is_allowed(const std::string& name) const {
        const std::lock_guard lock(mutex);
        return dns::name_allowed(name, allowed);
    }

    // Strand only: reports an unlisted name, once per name per window and
    // within the window's budget; the rest are counted for the next report.
    void report_unlisted(const dns::Query& query, bool answered) {
        if (!observer) return;
        const auto now = Clock::now();
        if (now - window_start >= DnsStub::kUnlistedWindow) {
            window_start = now;
            reported_in_window = 0;
            reported_names.clear();
        }
        if (reported_names.contains(query.question.name)) return;  // already in this window's records
        if (reported_in_window >= DnsStub::kUnlistedBudget) {
            ++suppressed;
            return;
        }
        ++reported_in_window;
        reported_names.insert(query.question.name);
        UnlistedName event{query.question.name, query.question.type, answered, suppressed};
        suppressed = 0;
        try {
            observer(event);
        } catch (const std::exception&) {  // a report is never worth the answer
        }
    }

    void remember(const std::string& name, const std::vector<IpAddress>& addresses) {
        const auto expires = Clock::now() + std::chrono::seconds(2 * static_cast<std::uint64_t>(ttl));
        const std::lock_guard lock(mutex);
        for (const auto& address : addresses) {
            AddressKey key{address.v4, address.bytes};
            if (const auto it = remembered.find(key); it != remembered.end()) {
                order.erase(it->second.position);
                remembered.erase(it);
            }
            order.push_back(key);
            remembered.emplace(key, Remembered{name, expires, std::prev(order.end())});
            if (remembered.size() > kMaxRemembered) {
                remembered.erase(order.front());
                order.pop_front();
            }
        }
    }

    // Strand only.
    void close_all() {
        stopped = true;
        error_code ignored;
        udp_socket.close(ignored);
        acceptor.close(ignored);
        for (const auto& connection : clients) connection->close();
    }

    net::io_context& io;
    Strand strand;
    // Strand only: the sockets, the client set, the in-flight count, `stopped`.
    udp::socket udp_socket;
    tcp::acceptor acceptor;
    std::set<std::shared_ptr<Connection>> clients;
    std::size_t udp_in_flight = 0;
    bool stopped = false;
    std::function<void(const UnlistedName&)> observer;  // set before start()
    Clock::time_point window_start = Clock::now();
    std::size_t reported_in_window = 0;
    std::set<std::string> reported_names;
    std::uint64_t suppressed = 0;
    std::atomic<bool> answer_unlisted{false};

    NameResolver& resolver;
    const std::uint32_t ttl;

    // `allowed` and the name_for() map, from any thread.
    mutable std::mutex mutex;
    std::vector<std::string> allowed;
    struct Remembered {
        std::string name;
        Clock::time_point expires;
        std::list<AddressKey>::iterator position;
    };
    std::map<AddressKey, Remembered> remembered;
    std::list<AddressKey> order;  // oldest first

    std::atomic<std::uint64_t> queries{0}, answered{0}, refused{0}, malformed{0}, failed{0};

    // How many coroutines are alive, so the destructor can wait for them.
    std::mutex running_mutex;
    std::condition_variable running_done;
    std::size_t running = 0;
};

namespace {

using State = DnsStub::State;

// Held by every coroutine of the stub: keeps the state alive and counts the
// coroutine as running until its frame is gone (finished or destroyed).
class Activity {
public:
    explicit Activity(std::shared_ptr<State> state) : state_(std::move(state)) {
        const std::lock_guard lock(state_->running_mutex);
        ++state_->running;
    }
    Activity(Activity&& other) noexcept = default;
    Activity& operator=(Activity&&) = delete;
    Activity(const Activity&) = delete;
    Activity& operator=(const Activity&) = delete;
    ~Activity() {
        if (!state_) return;
        const std::lock_guard lock(state_->running_mutex);
        --state_->running;
        state_->running_done.notify_all();
    }
    [[nodiscard]] State& state() const { return *state_; }
    [[nodiscard]] const std::shared_ptr<State>& shared() const { return state_; }

private:
    std::shared_ptr<State> state_;
};

// The response to a well-formed query (empty once the stub stopped). The
// only place a name can reach the resolver, and only when it is allowed or
// the stub answers unlisted names (a monitor or soft gateway's).
net::awaitable<std::vector<std::uint8_t>> respond(State& state, dns::Query query) {
    if (!state.is_allowed(query.question.name)) {
        const bool answer = state.answer_unlisted.load();
        state.report_unlisted(query, answer);
        if (!answer) {
            ++state.refused;
            co_return dns::refused(query);
        }
    }
    const auto type = query.question.type;
    if (type != dns::kTypeA && type != dns::kTypeAaaa) {
        // NODATA: TXT, MX and the like are never looked up anywhere.
        ++state.answered;
        co_return dns::answer(query, {}, state.ttl);
    }
    std::string name = query.question.name;
    std::optional<std::vector<IpAddress>> resolved;
    bool threw = false;
    try {
        resolved = co_await state.resolver.resolve(name);
    } catch (const std::exception&) {
        threw = true;  // fail closed: SERVFAIL below
    }
    if (state.stopped) co_return std::vector<std::uint8_t>{};
    if (threw || !resolved) {
        ++state.failed;
        co_return dns::server_failure(query);
    }
    if (const auto given = given_out(query, *resolved); !given.empty()) {
        state.remember(query.question.name, given);
        state.resolver.remember(query.question.name, given);
    }
    ++state.answered;
    co_return dns::answer(query, *resolved, state.ttl);
}

// Releases a UDP in-flight slot however the answering coroutine ends.
struct InFlightSlot {
    State& state;
    explicit InFlightSlot(State& s) : state(s) { ++state.udp_in_flight; }
    InFlightSlot(const InFlightSlot&) = delete;
    InFlightSlot& operator=(const InFlightSlot&) = delete;
    ~InFlightSlot() { --state.udp_in_flight; }
};

net::awaitable<void> udp_answer(Activity activity, dns::Query query, udp::endpoint to) {
    State& state = activity.state();
    const InFlightSlot slot(state);
    std::vector<std::uint8_t> response;
    try {
        response = co_await respond(state, query);
    } catch (const std::exception&) {
        response.clear();  // only allocation can fail here; the client retries
    }
    if (state.stopped || response.empty()) co_return;
    std::vector<std::uint8_t> datagram = dns::for_udp(query, std::move(response));
    const auto buffer = net::buffer(datagram);
    error_code error;
    co_await state.udp_socket.async_send_to(buffer, to, net::redirect_error(kToken, error));
}

net::awaitable<void> udp_loop(Activity activity) {
    State& state = activity.state();
    // A whole datagram: a shorter buffer would cut a large one into something else.
    std::vector<std::uint8_t> buffer(65536);
    for (;;) {
        udp::endpoint from;
        error_code error;
        const auto receive_buffer = net::buffer(buffer);
        const std::size_t n =
            co_await state.udp_socket.async_receive_from(receive_buffer, from, net::redirect_error(kToken, error));
        if (state.stopped || error == net::error::operation_aborted || error == net::error::bad_descriptor) co_return;
        if (error) continue;  // e.g. a queued ICMP error; the socket still works
        auto query = dns::parse_query(std::span<const std::uint8_t>(buffer.data(), n));
        if (!query) {
            ++state.malformed;  // no reply: a reply would make the stub a reflector
            continue;
        }
        ++state.queries;
        if (state.udp_in_flight >= DnsStub::kMaxUdpInFlight) {
            // Overloaded: answer cheaply rather than queue without bound.
            ++state.failed;
            std::vector<std::uint8_t> datagram = dns::server_failure(*query);
            const auto send_buffer = net::buffer(datagram);
            co_await state.udp_socket.async_send_to(send_buffer, from, net::redirect_error(kToken, error));
            continue;
        }
        // Each query answers on its own, so one slow lookup holds up no other.
        Activity child(activity.shared());
        net::co_spawn(state.strand, udp_answer(std::move(child), std::move(*query), from), net::detached);
    }
}

// Closes the connection once its deadline passes without a complete query.
net::awaitable<void> tcp_watchdog([[maybe_unused]] Activity activity, std::shared_ptr<Connection> connection) {
    while (connection->socket.is_open()) {
        connection->timer.expires_at(connection->deadline);
        error_code error;
        co_await connection->timer.async_wait(net::redirect_error(kToken, error));
        if (connection->deadline <= Clock::now()) {
            connection->close();
            co_return;
        }
    }
}

net::awaitable<void> tcp_client(Activity activity, std::shared_ptr<Connection> connection) {
    State& state = activity.state();
    {
        Activity watchdog(activity.shared());
        net::co_spawn(state.strand, tcp_watchdog(std::move(watchdog), connection), net::detached);
    }
    for (;;) {
        // RFC 7766 framing: a two-byte length, then the message.
        connection->deadline = Clock::now() + DnsStub::kTcpIdleTimeout;
        std::array<std::uint8_t, 2> prefix{};
        const auto prefix_buffer = net::buffer(prefix);
        error_code error;
        co_await net::async_read(connection->socket, prefix_buffer, net::redirect_error(kToken, error));
        if (error || state.stopped) break;
        const std::size_t length = (std::size_t{prefix[0]} << 8U) | prefix[1];
        if (length == 0 || length > DnsStub::kMaxTcpMessage) {
            ++state.malformed;
            break;
        }
        std::vector<std::uint8_t> message(length);
        const auto message_buffer = net::buffer(message);
        co_await net::async_read(connection->socket, message_buffer, net::redirect_error(kToken, error));
        if (error || state.stopped) break;
        auto query = dns::parse_query(message);
        if (!query) {
            ++state.malformed;
            break;
        }
        ++state.queries;
        std::vector<std::uint8_t> response;
        try {
            response = co_await respond(state, *query);
        } catch (const std::exception&) {
            response.clear();
        }
        if (response.empty() || response.size() > 0xffff || state.stopped) break;
        std::vector<std::uint8_t> framed(2 + response.size());
        framed[0] = static_cast<std::uint8_t>(response.size() >> 8U);
        framed[1] = static_cast<std::uint8_t>(response.size() & 0xffU);
        std::copy(response.begin(), response.end(), framed.begin() + 2);
        const auto framed_buffer = net::buffer(framed);
        co_await net::async_write(connection->socket, framed_buffer, net::redirect_error(kToken, error));
        if (error) break;
    }
    connection->close();
    state.clients.erase(connection);
}

net::awaitable<void> tcp_accept_loop(Activity activity) {
    State& state = activity.state();
    for (;;) {
        error_code error;
        tcp::socket socket = co_await state.acceptor.async_accept(net::redirect_error(kToken, error));
        if (state.stopped || error == net::error::operation_aborted || error == net::error::bad_descriptor) co_return;
        if (error) {
            // Out of fds and the like: pause instead of spinning.
            net::steady_timer pause(state.strand, std::chrono::milliseconds(100));
            co_await pause.async_wait(net::redirect_error(kToken, error));
            continue;
        }
        if (state.clients.size() >= DnsStub::kMaxTcpClients) {
            socket.close(error);  // the client sees a reset and may retry later
            continue;
        }
        auto connection = std::make_shared<Connection>(std::move(socket), state.strand);
        state.clients.insert(connection);
        Activity child(activity.shared());
        net::co_spawn(state.strand, tcp_client(std::move(child), std::move(connection)), net::detached);
    }
}

}  // namespace

net::awaitable<std::optional<std::vector<IpAddress>>> ProxyNameResolver::resolve(std::string name) {
    std::vector<IpAddress> addresses = co_await resolver_.resolve(name);
    if (addresses.empty()) co_return std::nullopt;
    co_return addresses;
}

void ProxyNameResolver::remember(const std::string& name, const std::vector<IpAddress>& addresses) {
    resolver_.remember(name, addresses);
}

DnsStub::DnsStub(net::io_context& io, UniqueFd udp_fd, UniqueFd tcp_fd, std::vector<std::string> allowed,
                 proxy::Resolver& resolver, std::uint32_t ttl)
    : adapter_(std::make_unique<ProxyNameResolver>(resolver)),
      state_(std::make_shared<State>(io, std::move(udp_fd), std::move(tcp_fd), std::move(allowed), *adapter_, ttl)) {}

DnsStub::DnsStub(net::io_context& io, UniqueFd udp_fd, UniqueFd tcp_fd, std::vector<std::string> allowed,
                 NameResolver& resolver, std::uint32_t ttl)
    : state_(std::make_shared<State>(io, std::move(udp_fd), std::move(tcp_fd), std::move(allowed), resolver, ttl)) {}

DnsStub::~DnsStub() {
    auto& io = state_->io;
    if (io.stopped()) {
        // Nothing runs the strand any more: close here; the coroutine frames
        // go when the io_context is destroyed or restarted.
        state_->close_all();
        return;
    }
    stop();
    // On one of io's own threads, waiting could wait for ourselves.
    if (io.get_executor().running_in_this_thread()) return;
    std::unique_lock lock(state_->running_mutex);
    // Bounded: if nobody runs io at all, give up rather than hang.
    state_->running_done.wait_for(lock, std::chrono::seconds(10), [this] { return state_->running == 0; });
}

void DnsStub::start() {
    auto state = state_;
    net::dispatch(state->strand, [state] {
        if (state->stopped) return;
        if (state->udp_socket.is_open()) net::co_spawn(state->strand, udp_loop(Activity(state)), net::detached);
        if (state->acceptor.is_open()) net::co_spawn(state->strand, tcp_accept_loop(Activity(state)), net::detached);
    });
}

void DnsStub::stop() {
    auto state = state_;
    net::dispatch(state->strand, [state] { state->close_all(); });
}

void DnsStub::set_allowed(std::vector<std::string> allowed) {
    const std::lock_guard lock(state_->mutex);
    state_->allowed = std::move(allowed);
}

void DnsStub::set_answer_unlisted(bool answer) {
    state_->answer_unlisted.store(answer);
}

void DnsStub::on_unlisted(std::function<void(const UnlistedName&)> observer) {
    state_->observer = std::move(observer);
}

DnsStubCounters DnsStub::counters() const {
    return {state_->queries.load(), state_->answered.load(), state_->refused.load(), state_->malformed.load(),
            state_->failed.load()};
}

std::optional<std::string> DnsStub::name_for(const proxy::IpAddress& address) const {
    const std::lock_guard lock(state_->mutex);
    const auto it = state_->remembered.find(AddressKey{address.v4, address.bytes});
    if (it == state_->remembered.end() || it->second.expires < Clock::now()) return std::nullopt;
    return it->second.name;
}

}  // namespace tameflare::dns
