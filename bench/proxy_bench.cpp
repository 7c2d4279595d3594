// What the proxy adds to a request: requests/s and per-request latency (p50,
// p99) through the proxy against a direct connection to the same loopback
// upstream, measured in the same run.
//
//   Http_*                  plain HTTP, one keep-alive connection
//   Https_*                 HTTPS, one keep-alive connection (the proxy intercepts:
//                           TLS from the client, policy, TLS to the upstream)
//   HttpsNewConnection_*    HTTPS, a new TCP connection and full TLS handshake per
//                           request (through the proxy: two handshakes)
//   *_ProxyLogged           through a second proxy that keeps the traffic log
//                           and audit chain in a real store (SQLite, WAL,
//                           synchronous=normal, the default): each request waits
//                           for its row to be committed before it is forwarded
//   Http_ProxyLoggedNoLinger  the same with StoreOptions::linger 0: each final
//                           record is committed in a transaction of its own
//   *_DataPlaneLogged       the same as *_ProxyLogged, served by the real
//                           tameflare-dataplane process as tameflared runs it
//                           (issue 24): its commits, records and leaves cross
//                           the channel to this process, which keeps the log.
//                           Its ratio to *_ProxyLogged is the channel's cost.
//                           Root only (its own user and cgroup); skipped otherwise
//
// One process: two TestUpstreams (HTTP on 127.0.0.8, HTTPS for api.example.test
// on 127.0.0.7), the proxy (2 threads, transparent listener, a gateway that
// allows everything with no rate limit and injects a credential into every
// request, records dropped) and a synchronous
// Beast client. The client binds 127.0.0.2 for plain HTTP and 127.0.0.3 for
// HTTPS, and the OriginLookup says where each was "redirected" by that
// address, as the BPF maps would. Each iteration is one GET of 128 bytes;
// time is wall-clock (UseRealTime), so items_per_second is requests/s;
// p50_us and p99_us are of the timed requests, and upstream_conns counts the
// connections the upstream accepted meanwhile (0: kept alive end to end).
#include <utility>  // before Asio: Boost 1.74's Asio needs it with C++20

#include "daemon/dataplane/remote_plane.h"
#include "daemon/proxy/server.h"
#include "daemon/store/store.h"
#include "daemon/store_services.h"
#include "netns/cgroup.h"
#include "netns/namespaces.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"
#include "tests/support/test_upstream.h"

#include <unistd.h>

#include <benchmark/benchmark.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace tameflare::proxy;
using tameflare::testing::TempDir;
using tameflare::testing::TestCa;
using tameflare::testing::TestUpstream;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

constexpr const char* kPlainUpstream = "127.0.0.8";
constexpr const char* kTlsUpstream = "127.0.0.7";
constexpr const char* kPlainClient = "127.0.0.2";  // the OriginLookup's key for plain HTTP
constexpr const char* kTlsClient = "127.0.0.3";    // ... and for HTTPS
constexpr const char* kPlainHost = "plain.example.test";
constexpr const char* kTlsHost = "api.example.test";
constexpr const char* kTarget = "/bytes?n=128";
constexpr std::size_t kBodyBytes = 128;
constexpr std::uint64_t kAgentTag = 1;  // the data plane's agent listener

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    return {std::istreambuf_iterator<char>(in), {}};
}

// The upstream a connection was "redirected" to, chosen by the client's address.
class ByClientAddress : public OriginLookup {
public:
    ByClientAddress(Origin plain, Origin tls) : plain_(std::move(plain)), tls_(std::move(tls)) {}
    std::optional<Origin> lookup(const AcceptedConnection& connection) override {
        const Endpoint& client = connection.client;
        if (client.address == *IpAddress::parse(kPlainClient)) return plain_;
        if (client.address == *IpAddress::parse(kTlsClient)) return tls_;
        return std::nullopt;
    }

private:
    Origin plain_, tls_;
};

// The vault: every request injects this credential (through the data plane
// process, asked for over the channel each time).
class BenchCredentials : public CredentialSource {
public:
    std::optional<std::string> credential(std::string_view name) override {
        if (name == "bench-key") return "bench-secret";
        return std::nullopt;
    }
};

class DropSink : public TrafficSink {
public:
    void record(TrafficRecord) override {}
};

Origin origin_of(const TestUpstream& upstream) {
    return {Endpoint{*IpAddress::parse(upstream.address()), upstream.port()}, "bench", "bench-agent"};
}

// Everything but the client, created once on first use and shared by every benchmark.
struct Env {
    TempDir dir{"tf-proxy-bench"};
    TestCa test_ca{dir.path()};
    TestUpstream plain{{.address = kPlainUpstream, .websocket = false}};
    TestUpstream tls{
        {.address = kTlsUpstream, .tls = test_ca.issue({kTlsHost}, {}, dir.path(), "api"), .websocket = false}};
    std::unique_ptr<CertificateAuthority> ca = CertificateAuthority::load_or_create(dir.path() / "state");
    tameflare::policy::ConfigStore store;
    ByClientAddress origins{origin_of(plain), origin_of(tls)};
    DropSink sink;
    BenchCredentials credentials;
    ssl::context trust_upstream{ssl::context::tls_client};  // the test CA: direct HTTPS
    ssl::context trust_proxy{ssl::context::tls_client};     // the proxy's CA: intercepted HTTPS
    std::optional<ProxyServer> proxy;
    std::unique_ptr<tameflare::store::Store> database;
    std::optional<tameflare::daemon::StoreTrafficSink> logged_sink;
    std::optional<ProxyServer> logged_proxy;
    std::unique_ptr<tameflare::store::Store> eager_database;
    std::optional<tameflare::daemon::StoreTrafficSink> eager_sink;
    std::optional<ProxyServer> eager_proxy;
    // The data plane in its own process (root only), logging to a store of its own.
    struct CgroupDir {
        std::filesystem::path path;
        CgroupDir() = default;
        CgroupDir(const CgroupDir&) = delete;
        CgroupDir& operator=(const CgroupDir&) = delete;
        ~CgroupDir() {
            if (!path.empty()) ::rmdir(path.c_str());
        }
    } cgroup;
    std::unique_ptr<tameflare::store::Store> remote_database;
    std::optional<tameflare::daemon::StoreTrafficSink> remote_sink;
    std::optional<tameflare::dataplane::RemoteDataPlane> remote;
    std::uint16_t remote_port = 0;

    Env() {
        const nlohmann::json gateway = {{"name", "bench"},
                                        {"rate_limit", {{"requests", 0}}},
                                        {"connectors",
                                         {{"web",
                                           {{"connector", "http"},
                                            {"domains", {kPlainHost, kTlsHost}},
                                            {"credential", "bench-key"},
                                            {"preset", "allow_all"}}}}}};
        const auto loaded = tameflare::policy::load_config(
            {{"http.json", read_file(TF_SOURCE_DIR "/connectors/http.json")}}, {{"bench.json", gateway.dump()}});
        if (!loaded.ok()) throw std::runtime_error(tameflare::policy::format_errors(loaded.errors));
        store.publish(loaded.config);

        trust_upstream.load_verify_file(test_ca.ca_file().string());
        const std::string pem = ca->certificate_pem();
        trust_proxy.add_certificate_authority(net::buffer(pem));

        ProxyOptions options;
        options.transparent_listen = Endpoint{*IpAddress::parse("127.0.0.1"), 0};
        options.threads = 2;
        options.system_resolver = false;
        options.hosts = {{kPlainHost, {*IpAddress::parse(kPlainUpstream)}},
                         {kTlsHost, {*IpAddress::parse(kTlsUpstream)}}};
        options.allowed_upstreams = {*Cidr::parse("127.0.0.0/8")};
        options.upstream_ca_file = test_ca.ca_file().string();
        proxy.emplace(options, ProxyServices{&store, ca.get(), &origins, &credentials, nullptr, &sink});
        proxy->start();

        tameflare::store::StoreOptions store_options;
        store_options.database = dir.path() / "tameflared.db";
        database = tameflare::store::Store::open(store_options);
        logged_sink.emplace(*database, false);
        logged_proxy.emplace(options, ProxyServices{&store, ca.get(), &origins, &credentials, nullptr, &*logged_sink});
        logged_proxy->start();

        // The same, with the writer's linger off (each final record its own transaction).
        store_options.database = dir.path() / "eager.db";
        store_options.linger = std::chrono::microseconds(0);
        eager_database = tameflare::store::Store::open(store_options);
        eager_sink.emplace(*eager_database, false);
        eager_proxy.emplace(options, ProxyServices{&store, ca.get(), &origins, &credentials, nullptr, &*eager_sink});
        eager_proxy->start();

        if (::geteuid() != 0) return;
        try {
            start_data_plane(options);
        } catch (const std::exception& error) {
            // Only its own benchmarks are skipped (the client says so).
            remote.reset();
            std::fprintf(stderr, "the data plane process cannot start: %s\n", error.what());
        }
    }

    // As tameflared runs it: the listener bound here and passed; origins asked
    // over the channel (no BPF map here), once per connection.
    void start_data_plane(const ProxyOptions& options) {
        cgroup.path = tameflare::netns::cgroup2_mount() / ("tf-proxy-bench-" + std::to_string(::getpid()));
        tameflare::store::StoreOptions store_options;
        store_options.database = dir.path() / "dataplane.db";
        remote_database = tameflare::store::Store::open(store_options);
        remote_sink.emplace(*remote_database, false);
        tameflare::dataplane::RemoteDataPlaneOptions remote_options;
        remote_options.process.binary = TAMEFLARE_DATAPLANE_BINARY;
        remote_options.process.cgroup = cgroup.path;
        remote_options.process.readable = {"/etc/ssl", "/usr/lib", "/lib"};
        remote_options.proxy = options;
        remote_options.proxy.transparent_listen.reset();
        remote_options.config = &store;
        remote_options.host = {&*remote_sink, nullptr, &credentials, ca.get(),
                               [this](std::uint64_t, const Endpoint& client) -> std::optional<tameflare::bpf::Origin> {
                                   const auto origin = origins.lookup(AcceptedConnection{client, {}, -1, kAgentTag});
                                   if (!origin) return std::nullopt;
                                   return tameflare::bpf::Origin{origin->destination, kAgentTag};
                               }};
        remote.emplace(std::move(remote_options));
        remote->start();
        auto listener = tameflare::netns::listen_tcp(Endpoint{*IpAddress::parse("127.0.0.1"), 0});
        remote_port = tameflare::netns::local_endpoint(listener.get()).port;
        remote->serve_agent({kAgentTag, "bench", "bench-agent", std::move(listener), {}, {}});
    }

    static Env& get() {
        static Env env;
        return env;
    }
};

struct Path {
    bool tls = false;
    bool proxy = false;
    bool logged = false;  // through the proxy that keeps the traffic log
    bool eager = false;   // ... the one whose writer does not linger
    bool remote = false;  // ... the data plane in its own process
};

// One HTTP/1.1 connection, to the upstream or to the proxy's transparent listener.
class Client {
public:
    Client(Env& env, Path path) : socket_(io_), proxied_(path.proxy) {
        const TestUpstream& upstream = path.tls ? env.tls : env.plain;
        host_ = std::string(path.tls ? kTlsHost : kPlainHost) + ":" + std::to_string(upstream.port());
        socket_.open(tcp::v4());
        socket_.bind({net::ip::make_address(path.tls ? kTlsClient : kPlainClient), 0});
        const auto& through = path.eager ? env.eager_proxy : path.logged ? env.logged_proxy : env.proxy;
        if (path.remote && !env.remote) throw std::runtime_error("the data plane process needs root");
        const std::uint16_t port = path.remote ? env.remote_port : through->transparent_endpoint()->port;
        socket_.connect(path.proxy ? tcp::endpoint{net::ip::make_address("127.0.0.1"), port}
                                   : tcp::endpoint{net::ip::make_address(upstream.address()), upstream.port()});
        socket_.set_option(tcp::no_delay(true));
        if (!path.tls) return;
        tls_.emplace(socket_, path.proxy ? env.trust_proxy : env.trust_upstream);
        SSL_set_tlsext_host_name(tls_->native_handle(), kTlsHost);
        SSL_set1_host(tls_->native_handle(), kTlsHost);
        tls_->set_verify_mode(ssl::verify_peer);
        tls_->handshake(ssl::stream_base::client);
    }

    // One GET; throws unless it is a 200 with the expected body, marked
    // allowed by the proxy exactly when it went through it.
    void get(bool keep_alive = true) {
        http::request<http::empty_body> request{http::verb::get, kTarget, 11};
        request.set(http::field::host, host_);
        request.keep_alive(keep_alive);
        http::response<http::string_body> response;
        const auto exchange = [&](auto& stream) {
            http::write(stream, request);
            http::read(stream, buffer_, response);
        };
        if (tls_) {
            exchange(*tls_);
        } else {
            exchange(socket_);
        }
        const bool allowed = response["X-TameFlare-Decision"] == "allowed";
        if (response.result() != http::status::ok || response.body().size() != kBodyBytes || allowed != proxied_)
            throw std::runtime_error("unexpected response " + std::to_string(response.result_int()) + ": " +
                                     response.body().substr(0, 300));
    }

private:
    net::io_context io_;
    tcp::socket socket_;
    std::optional<ssl::stream<tcp::socket&>> tls_;
    boost::beast::flat_buffer buffer_;
    std::string host_;
    bool proxied_;
};

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) return 0;
    return sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5)];
}

void run(benchmark::State& state, Path path, bool new_connections) {
    using clock = std::chrono::steady_clock;
    std::vector<double> samples;  // microseconds
    samples.reserve(std::size_t{1} << 18);
    std::optional<Client> client;
    TestUpstream* upstream = nullptr;
    std::size_t upstream_connections = 0;
    // TestUpstream keeps every request it sees; forgetting them every 1,024
    // keeps its vector from reallocating mid-run (a 10-40 ms stall of the
    // upstream that showed up in the direct baseline's tail).
    const auto forget = [&] {
        upstream_connections += upstream->connections_accepted();
        upstream->clear();
    };
    try {
        Env& env = Env::get();
        upstream = path.tls ? &env.tls : &env.plain;
        if (!new_connections) {
            client.emplace(env, path);
            client->get();  // warm: the proxy's leaf is minted, the upstream connection opened
        } else {
            Client(env, path).get(false);
        }
        upstream->clear();
        for (auto _ : state) {
            const auto start = clock::now();
            if (new_connections) {
                Client(env, path).get(false);
            } else {
                client->get();
            }
            samples.push_back(std::chrono::duration<double, std::micro>(clock::now() - start).count());
            if (samples.size() % 1024 == 0) {
                state.PauseTiming();
                forget();
                state.ResumeTiming();
            }
        }
        forget();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    std::sort(samples.begin(), samples.end());
    state.counters["p50_us"] = percentile(samples, 0.50);
    state.counters["p99_us"] = percentile(samples, 0.99);
    // Connections the upstream accepted while timed: 0 when the proxy keeps its own alive.
    state.counters["upstream_conns"] = static_cast<double>(upstream_connections);
    state.SetItemsProcessed(state.iterations());
}

void BM_Http_Direct(benchmark::State& state) {
    run(state, {.tls = false, .proxy = false}, false);
}
void BM_Http_Proxy(benchmark::State& state) {
    run(state, {.tls = false, .proxy = true}, false);
}
void BM_Https_Direct(benchmark::State& state) {
    run(state, {.tls = true, .proxy = false}, false);
}
void BM_Https_Proxy(benchmark::State& state) {
    run(state, {.tls = true, .proxy = true}, false);
}
void BM_Http_ProxyLogged(benchmark::State& state) {
    run(state, {.tls = false, .proxy = true, .logged = true}, false);
}
void BM_Http_ProxyLoggedNoLinger(benchmark::State& state) {
    run(state, {.tls = false, .proxy = true, .logged = true, .eager = true}, false);
}
void BM_Https_ProxyLogged(benchmark::State& state) {
    run(state, {.tls = true, .proxy = true, .logged = true}, false);
}
void BM_Http_DataPlaneLogged(benchmark::State& state) {
    run(state, {.tls = false, .proxy = true, .logged = true, .remote = true}, false);
}
void BM_Https_DataPlaneLogged(benchmark::State& state) {
    run(state, {.tls = true, .proxy = true, .logged = true, .remote = true}, false);
}
void BM_HttpsNewConnection_Direct(benchmark::State& state) {
    run(state, {.tls = true, .proxy = false}, true);
}
void BM_HttpsNewConnection_Proxy(benchmark::State& state) {
    run(state, {.tls = true, .proxy = true}, true);
}

// MinTime overrides --benchmark_min_time; 1 s each keeps the whole run near 10 s.
BENCHMARK(BM_Http_Direct)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Http_Proxy)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Http_ProxyLogged)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Http_ProxyLoggedNoLinger)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Http_DataPlaneLogged)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Https_Direct)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Https_Proxy)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Https_ProxyLogged)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_Https_DataPlaneLogged)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_HttpsNewConnection_Direct)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_HttpsNewConnection_Proxy)->UseRealTime()->MinTime(1.0);

}  // namespace
