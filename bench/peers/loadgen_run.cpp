#include "bench/peers/loadgen_run.h"

#include "bench/peers/loadgen_connection.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/resource.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/write.hpp>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace tameflare::loadgen {

namespace {

namespace http = boost::beast::http;

using boost::system::error_code;
constexpr auto kToken = net::use_awaitable;

// Connections being set up at once: more could overflow the peer's listen backlog.
constexpr std::size_t kSetupsInFlight = 256;
// A connection that failed waits this long before it dials again.
constexpr std::chrono::milliseconds kRetryDelay{10};
// How long requests in flight at the end of the window may take to finish.
constexpr std::chrono::seconds kDrainLimit{5};
// A run in which nothing has succeeded after this long, with errors, stops.
constexpr std::chrono::seconds kNoSuccessLimit{3};
// Beast 1.74 cannot lift the body limit (body_limit(boost::none) is broken); this is plenty.
constexpr std::uint64_t kBodyLimit = std::uint64_t{64} << 20;
constexpr std::size_t kReadBuffer = std::size_t{64} * 1024;

double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

double rounded(double value, double scale) {
    return std::round(value * scale) / scale;
}

std::uint32_t micros_between(Clock::time_point from, Clock::time_point to) {
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
    return static_cast<std::uint32_t>(std::clamp<std::int64_t>(micros, 0, UINT32_MAX));
}

std::string basic_credentials(const std::string& user_pass) {
    std::string out(4 * ((user_pass.size() + 2) / 3) + 1, '\0');
    const int written =
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                        reinterpret_cast<const unsigned char*>(user_pass.data()), static_cast<int>(user_pass.size()));
    out.resize(static_cast<std::size_t>(written));
    return "Basic " + out;
}

tcp::endpoint resolve(net::io_context& io, const std::string& host, std::uint16_t port, const std::string& what) {
    tcp::resolver resolver(io);
    error_code ec;
    const auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) {
        throw std::runtime_error("cannot resolve " + what + " '" + host +
                                 "': " + (ec ? ec.message() : std::string("no address")));
    }
    return results.begin()->endpoint();
}

bool is_ip_address(const std::string& host) {
    error_code ec;
    net::ip::make_address(host, ec);
    return !ec;
}

// A request head as Beast writes it.
std::string serialized(const http::request<http::empty_body>& request) {
    std::ostringstream out;
    out << request;
    return out.str();
}

std::string build_request(const Options& options) {
    const Url& url = options.url;
    // Through a proxy, plain HTTP goes in absolute form; HTTPS goes in origin form inside the tunnel.
    const bool absolute = options.through_proxy() && !url.https;
    http::request<http::empty_body> request{http::verb::get,
                                            absolute ? "http://" + url.host_header() + url.target : url.target, 11};
    request.set(http::field::host, url.host_header());
    if (absolute && options.proxy_auth) {
        request.set(http::field::proxy_authorization, basic_credentials(*options.proxy_auth));
    }
    request.set(http::field::user_agent, "tf_loadgen");
    request.set(http::field::accept, "*/*");
    if (options.new_connection) request.keep_alive(false);
    return serialized(request);
}

std::string build_connect_request(const Options& options) {
    if (!options.through_proxy() || !options.url.https) return {};
    const std::string authority = options.url.authority();
    http::request<http::empty_body> request{http::verb::connect, authority, 11};
    request.set(http::field::host, authority);
    if (options.proxy_auth) request.set(http::field::proxy_authorization, basic_credentials(*options.proxy_auth));
    request.set(http::field::user_agent, "tf_loadgen");
    return serialized(request);
}

// The one client TLS context of the run: peer verification on, no session
// reuse (every new connection is a full handshake), HTTP/1.1 by ALPN.
std::optional<ssl::context> make_tls(const Options& options) {
    if (!options.url.https) return std::nullopt;
    std::optional<ssl::context> context(std::in_place, ssl::context::tls_client);
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    context->set_verify_mode(ssl::verify_peer);
    error_code ec;
    if (options.ca_file.empty()) {
        context->set_default_verify_paths(ec);
        if (ec) throw std::runtime_error("cannot load the system's CA certificates: " + ec.message());
    } else {
        if (!std::ifstream(options.ca_file)) {
            throw std::runtime_error("--ca: cannot read '" + options.ca_file + "': " + std::strerror(errno));
        }
        context->load_verify_file(options.ca_file, ec);
        if (ec) {
            throw std::runtime_error("--ca: '" + options.ca_file +
                                     "' holds no usable PEM certificate: " + ec.message());
        }
    }
    SSL_CTX* native = context->native_handle();
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
    static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(native, kAlpn, sizeof kAlpn);
    // Thousands of idle connections: OpenSSL frees its record buffers between reads.
    if (options.mode == Mode::idle) SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    return context;
}

template <typename Awaitable>
void spawn(net::io_context& io, Awaitable&& awaitable) {
    net::co_spawn(io, std::forward<Awaitable>(awaitable), [](const std::exception_ptr& error) {
        if (error) std::rethrow_exception(error);
    });
}

enum class Phase { warmup, window, stopped };

class Run {
public:
    explicit Run(const Options& options);
    Outcome execute();

private:
    net::awaitable<void> launch();
    net::awaitable<void> load_worker(std::size_t index);
    net::awaitable<void> idle_worker(std::size_t index);
    net::awaitable<void> load_phases();
    net::awaitable<void> idle_phases();
    net::awaitable<void> tick();
    net::awaitable<void> watch_signals();
    net::awaitable<void> wait_until(Clock::time_point when);
    net::awaitable<void> retry_later(net::steady_timer& timer);

    void record_ok(Clock::time_point begin, Clock::time_point end, std::uint64_t bytes);
    void record_error(const Failure& failure);
    void setup_done();
    void worker_done();
    void on_ready();
    void begin_window();
    void stop(const char* reason);
    void finish();
    nlohmann::ordered_json load_report();
    nlohmann::ordered_json idle_report();
    std::string failure() const;

    const Options& options_;
    net::io_context io_{1};
    std::optional<ssl::context> tls_;
    Target target_;
    std::vector<std::unique_ptr<Connection>> connections_;
    net::steady_timer phase_timer_{io_};
    net::steady_timer tick_timer_{io_};
    net::steady_timer launch_timer_{io_};
    net::signal_set signals_{io_, SIGINT, SIGTERM};

    Phase phase_ = Phase::warmup;
    bool stopping_ = false;
    bool finished_ = false;
    bool launcher_waiting_ = false;
    bool ready_ = false;
    std::string stopped_by_;
    std::string abort_reason_;
    Clock::time_point started_;
    Clock::time_point window_begin_;
    Clock::time_point window_end_;
    Clock::time_point ready_at_;
    Clock::time_point ended_;
    double cpu_started_ = 0;
    double cpu_window_begin_ = 0;
    double cpu_window_end_ = 0;

    std::size_t live_ = 0;          // workers spawned and not yet done
    std::size_t setting_up_ = 0;    // workers whose first connection is being set up
    std::size_t first_done_ = 0;    // idle: connections whose one request has finished
    std::size_t first_failed_ = 0;  // idle: ... and failed
    std::uint64_t dropped_ = 0;     // idle: connections the peer closed while they were held
    std::uint64_t opened_ = 0;
    std::uint64_t stale_reconnects_ = 0;  // kept-alive connections found closed and dialled again
    std::uint64_t ok_total_ = 0;
    std::uint64_t errors_total_ = 0;
    std::uint64_t ok_ = 0;  // in the window, as are bytes_, latencies_ and errors_
    std::uint64_t bytes_ = 0;
    std::uint64_t warmup_errors_ = 0;
    Latencies latencies_;
    ErrorCounts errors_;
    std::array<bool, kErrorKinds> reported_{};
    std::string last_error_;
};

Run::Run(const Options& options) : options_(options), tls_(make_tls(options)) {
    const Url& url = options.url;
    if (options.through_proxy()) {
        target_.endpoint = resolve(io_, options.proxy->host, options.proxy->port, "the proxy");
    } else if (options.connect_to) {
        target_.endpoint = resolve(io_, options.connect_to->host, options.connect_to->port, "--connect-to");
    } else {
        target_.endpoint = resolve(io_, url.host, url.port, "the URL's host");
    }
    target_.tls = tls_ ? &*tls_ : nullptr;
    target_.name = url.host;
    target_.name_is_ip = is_ip_address(url.host);
    target_.connect_request = build_connect_request(options);
    target_.request = build_request(options);
    target_.expect_bytes = options.expect_bytes;
    target_.body_limit = std::max(kBodyLimit, options.expect_bytes.value_or(0) + 1);
    target_.read_buffer = options.mode == Mode::idle ? 0 : kReadBuffer;
    connections_.reserve(options.connections);
    for (unsigned i = 0; i < options.connections; ++i) {
        connections_.push_back(std::make_unique<Connection>(io_.get_executor(), target_, opened_));
    }
}

Outcome Run::execute() {
    started_ = Clock::now();
    cpu_started_ = cpu_seconds();
    spawn(io_, watch_signals());
    spawn(io_, tick());
    if (options_.mode == Mode::idle) {
        spawn(io_, idle_phases());
    } else {
        spawn(io_, load_phases());
    }
    spawn(io_, launch());
    io_.run();
    Outcome outcome;
    outcome.report = options_.mode == Mode::idle ? idle_report() : load_report();
    outcome.failure = failure();
    return outcome;
}

// Workers start gradually: at most kSetupsInFlight connections are being set up at once.
net::awaitable<void> Run::launch() {
    for (std::size_t i = 0; i < connections_.size() && !stopping_; ++i) {
        while (setting_up_ >= kSetupsInFlight && !stopping_) {
            launcher_waiting_ = true;
            launch_timer_.expires_at(Clock::time_point::max());
            error_code ignored;
            co_await launch_timer_.async_wait(net::redirect_error(kToken, ignored));
            launcher_waiting_ = false;
        }
        if (stopping_) break;
        ++setting_up_;
        ++live_;
        if (options_.mode == Mode::idle) {
            spawn(io_, idle_worker(i));
        } else {
            spawn(io_, load_worker(i));
        }
    }
}

void Run::setup_done() {
    --setting_up_;
    if (launcher_waiting_) launch_timer_.cancel();
}

void Run::worker_done() {
    --live_;
    if (live_ == 0 && stopping_) phase_timer_.cancel();
}

net::awaitable<void> Run::retry_later(net::steady_timer& timer) {
    timer.expires_after(kRetryDelay);
    error_code ignored;
    co_await timer.async_wait(net::redirect_error(kToken, ignored));
}

// A closed loop: one request after the other on one connection, which is
// dialled again after a failure, after Connection: close, and with
// --new-connection after every request.
net::awaitable<void> Run::load_worker(std::size_t index) {
    Connection& connection = *connections_[index];
    net::steady_timer retry(io_);
    Response response;
    bool setting_up = true;
    while (!stopping_) {
        const auto dialled = Clock::now();
        const bool reused = connection.is_open();
        std::optional<Failure> failed;
        if (!reused) {
            failed = co_await connection.open();
            if (setting_up) {
                setting_up = false;
                setup_done();
            }
        }
        const auto begin = options_.new_connection ? dialled : Clock::now();
        if (!failed) {
            failed = co_await connection.request(response);
            if (failed && reused && failed->closed_before_response) {
                // The peer closed the kept-alive connection while it was idle
                // (tinyproxy does, without Connection: close). Dial again and
                // retry, as HTTP clients do; the time this takes counts.
                ++stale_reconnects_;
                failed = co_await connection.open();
                if (!failed) failed = co_await connection.request(response);
            }
        }
        if (failed) {
            record_error(*failed);
            connection.reset();
            co_await retry_later(retry);
            continue;
        }
        record_ok(begin, Clock::now(), response.body_bytes);
        if (options_.new_connection || !response.keep_alive) connection.reset();
    }
    if (setting_up) setup_done();
    connection.reset();
    worker_done();
}

// One request, then the connection is held open until the end of the hold.
net::awaitable<void> Run::idle_worker(std::size_t index) {
    Connection& connection = *connections_[index];
    const auto dialled = Clock::now();
    Response response;
    auto failed = co_await connection.open();
    if (!failed) failed = co_await connection.request(response);
    setup_done();
    if (failed) {
        record_error(*failed);
        ++first_failed_;
        connection.reset();
    } else {
        ++ok_total_;
        latencies_.add(micros_between(dialled, Clock::now()));
        bytes_ += response.body_bytes;
        connection.release_buffers();
    }
    if (++first_done_ == connections_.size()) on_ready();
    if (!failed && !stopping_) {
        co_await connection.hold();
        if (!stopping_ && dropped_++ == 0) {
            std::cerr << "tf_loadgen: the peer closed a connection it had answered, "
                      << rounded(seconds_between(started_, Clock::now()), 10)
                      << " s into the run (counted as dropped; further ones are not shown)\n";
        }
    }
    connection.reset();
    worker_done();
}

void Run::on_ready() {
    ready_ = true;
    ready_at_ = Clock::now();
    if (stopping_) return;
    const auto ready_s = rounded(seconds_between(started_, ready_at_), 1000);
    nlohmann::ordered_json event;
    event["event"] = "ready";
    event["connections"] = connections_.size();
    event["failed"] = first_failed_;
    event["dropped"] = dropped_;  // answered, then closed by the peer already (not held)
    std::cout << event.dump() << std::endl;
    std::cerr << "tf_loadgen: " << connections_.size() - first_failed_ << " of " << connections_.size()
              << " connections answered after " << ready_s << " s; " << connections_.size() - first_failed_ - dropped_
              << " held open and idle, " << dropped_ << " closed by the peer\n";
    if (ok_total_ == 0) {
        abort_reason_ = "none of the " + std::to_string(connections_.size()) +
                        " connections got a good answer; last error: " + last_error_;
        stop("no_success");
        return;
    }
    phase_timer_.cancel();
}

void Run::record_ok(Clock::time_point begin, Clock::time_point end, std::uint64_t bytes) {
    ++ok_total_;
    if (phase_ != Phase::window) return;
    latencies_.add(micros_between(begin, end));
    ++ok_;
    bytes_ += bytes;
    if (options_.max_requests && ok_ >= *options_.max_requests) stop("max_requests");
}

void Run::record_error(const Failure& failure) {
    if (stopping_) return;  // the end of the run closed it
    ++errors_total_;
    if (options_.mode == Mode::idle || phase_ == Phase::window) {
        errors_.add(failure.kind);
    } else {
        ++warmup_errors_;
    }
    auto& reported = reported_.at(static_cast<std::size_t>(failure.kind));
    if (!reported) {
        reported = true;
        std::cerr << "tf_loadgen: first " << error_name(failure.kind) << " error: " << failure.detail << "\n";
    }
    last_error_ = failure.detail;
}

void Run::begin_window() {
    phase_ = Phase::window;
    window_begin_ = Clock::now();
    cpu_window_begin_ = cpu_seconds();
}

// Stops issuing requests; idempotent. Ends the measured window when in it.
void Run::stop(const char* reason) {
    if (stopping_) return;
    stopping_ = true;
    stopped_by_ = reason;
    if (phase_ == Phase::window) {
        window_end_ = Clock::now();
        cpu_window_end_ = cpu_seconds();
    }
    phase_ = Phase::stopped;
    phase_timer_.cancel();
    launch_timer_.cancel();
}

void Run::finish() {
    ended_ = Clock::now();
    for (auto& connection : connections_) connection->abort();
    finished_ = true;
    tick_timer_.cancel();
    signals_.cancel();
}

net::awaitable<void> Run::wait_until(Clock::time_point when) {
    if (stopping_) co_return;
    phase_timer_.expires_at(when);
    error_code ignored;
    co_await phase_timer_.async_wait(net::redirect_error(kToken, ignored));
}

net::awaitable<void> Run::load_phases() {
    const auto warmup = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.warmup_s));
    const auto window = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.duration_s));
    if (warmup > Clock::duration::zero()) co_await wait_until(started_ + warmup);
    if (!stopping_) {
        begin_window();
        co_await wait_until(window_begin_ + window);
    }
    stop("duration");
    // Let the requests in flight finish (not counted), within bounds; a run
    // that gave up has nothing worth waiting for.
    if (live_ > 0 && abort_reason_.empty()) {
        phase_timer_.expires_after(kDrainLimit);
        error_code ignored;
        co_await phase_timer_.async_wait(net::redirect_error(kToken, ignored));
    }
    if (live_ > 0 && abort_reason_.empty()) {
        std::cerr << "tf_loadgen: " << live_ << " requests still in flight after the drain limit, closed\n";
    }
    finish();
}

net::awaitable<void> Run::idle_phases() {
    if (!ready_) co_await wait_until(Clock::time_point::max());
    if (!stopping_) {
        const auto hold =
            options_.hold_s
                ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*options_.hold_s))
                : Clock::duration::max();
        co_await wait_until(hold == Clock::duration::max() ? Clock::time_point::max() : Clock::now() + hold);
    }
    stop("hold");
    finish();
}

// Once a second: times out what has waited too long, and gives up on a run
// in which nothing succeeds.
net::awaitable<void> Run::tick() {
    while (!finished_) {
        tick_timer_.expires_after(std::chrono::seconds(1));
        error_code ignored;
        co_await tick_timer_.async_wait(net::redirect_error(kToken, ignored));
        if (finished_) break;
        const auto now = Clock::now();
        for (auto& connection : connections_) connection->expire(now);
        if (!stopping_ && options_.mode != Mode::idle && ok_total_ == 0 && errors_total_ > 0 &&
            now - started_ >= kNoSuccessLimit) {
            abort_reason_ = "no request succeeded in " +
                            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - started_).count()) +
                            " s (" + std::to_string(errors_total_) + " errors); last error: " + last_error_;
            stop("no_success");
        }
    }
}

net::awaitable<void> Run::watch_signals() {
    error_code ec;
    const int number = co_await signals_.async_wait(net::redirect_error(kToken, ec));
    if (ec) co_return;
    std::cerr << "tf_loadgen: " << strsignal(number) << ", stopping\n";
    stop("signal");
}

nlohmann::ordered_json Run::load_report() {
    const bool measured = window_end_ > window_begin_;
    const double window_s = measured ? seconds_between(window_begin_, window_end_) : 0;
    const double per_second = window_s > 0 ? 1 / window_s : 0;
    nlohmann::ordered_json out;
    out["mode"] = mode_name(options_.mode);
    out["url"] = options_.url.text;
    if (options_.proxy) out["proxy"] = options_.proxy->host + ":" + std::to_string(options_.proxy->port);
    out["connections"] = options_.connections;
    out["new_connection"] = options_.new_connection;
    out["window_s"] = rounded(window_s, 1000);
    out["requests"] = ok_;
    out["rps"] = rounded(static_cast<double>(ok_) * per_second, 10);
    out["bytes_per_s"] = std::round(static_cast<double>(bytes_) * per_second);
    const auto requests = ok_;
    out["latency_us"] = latencies_.summarize();
    out["errors"] = errors_.to_json();
    out["warmup_errors"] = warmup_errors_;
    out["connections_opened"] = opened_;
    out["stale_reconnects"] = stale_reconnects_;
    out["client_cpu_s"] = measured ? rounded(cpu_window_end_ - cpu_window_begin_, 1000) : 0.0;
    out["stopped_by"] = stopped_by_;
    std::cerr << "tf_loadgen: " << requests << " requests in " << rounded(window_s, 100) << " s ("
              << out["rps"].get<double>() << "/s)";
    if (requests > 0)
        std::cerr << ", p50 " << out["latency_us"]["p50"] << " us, p99 " << out["latency_us"]["p99"] << " us";
    std::cerr << ", " << errors_.total() << " errors, client CPU " << out["client_cpu_s"].get<double>() << " s\n";
    return out;
}

nlohmann::ordered_json Run::idle_report() {
    nlohmann::ordered_json out;
    out["mode"] = mode_name(options_.mode);
    out["url"] = options_.url.text;
    if (options_.proxy) out["proxy"] = options_.proxy->host + ":" + std::to_string(options_.proxy->port);
    out["connections"] = options_.connections;
    out["requests"] = ok_total_;
    out["failed"] = first_failed_ + (connections_.size() - first_done_);
    out["ready"] = ready_;
    out["ready_s"] = ready_ ? rounded(seconds_between(started_, ready_at_), 1000) : 0.0;
    out["held_s"] = ready_ ? rounded(seconds_between(ready_at_, ended_), 1000) : 0.0;
    out["dropped"] = dropped_;
    out["latency_us"] = latencies_.summarize();  // of the one request, set-up included
    out["errors"] = errors_.to_json();
    out["connections_opened"] = opened_;
    out["client_cpu_s"] = rounded(cpu_seconds() - cpu_started_, 1000);
    out["stopped_by"] = stopped_by_;
    return out;
}

std::string Run::failure() const {
    if (!abort_reason_.empty()) return abort_reason_;
    if (options_.mode == Mode::idle) {
        if (!ready_) return "stopped before all connections were open";
        return {};
    }
    if (ok_ > 0) return {};
    if (ok_total_ > 0)
        return "no request succeeded in the measured window (" + std::to_string(errors_.total()) + " errors)";
    if (errors_total_ == 0) return "no request finished";
    return "no request succeeded (" + std::to_string(errors_total_) + " errors); last error: " + last_error_;
}

}  // namespace

Outcome run(const Options& options) {
    Run run(options);
    return run.execute();
}

}  // namespace tameflare::loadgen
