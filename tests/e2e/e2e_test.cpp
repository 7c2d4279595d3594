// The installed product in a booted systemd: builds the .deb (cpack), makes a
// Debian 12 root with debootstrap (cached), installs the package in a copy of
// it without systemd running (the maintainer scripts' chroot path), boots the
// copy with systemd-nspawn, and checks from inside what an administrator and
// a user would do: enable the service, reach it on D-Bus and REST, approve as
// a member, run agents whose allowed requests work and whose denied and
// bypass attempts do not, restart the daemon under traffic, read the journal,
// stop it, purge the package.
//
// One container serves the whole suite (booting one per test would cost a
// minute each), so ctest runs this binary as one test (tests/e2e/CMakeLists.txt);
// the tests run in the order written and each states what it needs.
//
// Environment: TF_E2E_CACHE (default /var/cache/tameflare-e2e) holds the
// cached roots and downloaded .debs; TF_E2E_KEEP=1 leaves the container
// running and the scratch directory in place for a look (the test prints how
// to enter it and how to stop it).
#include "tests/e2e/host.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

namespace tameflare::e2e {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kSuite = "bookworm";
constexpr const char* kUpstreamAddress = "127.0.0.7";
constexpr const char* kUpstreamPort = "8080";
constexpr const char* kUpstreamTlsPort = "8443";  // the same upstream over HTTPS, with a certificate of a test CA
constexpr const char* kSecret = "e2e-secret-7f3a";
constexpr const char* kMember = "e2e-member";
// A user in tameflare-member only (created once, by whichever check needs it first).
const std::string kAddMember =
    std::string("id ") + kMember + " >/dev/null 2>&1 || useradd --create-home --groups tameflare-member " + kMember;

// What the booted root needs besides the package's Depends: the service
// manager and the bus, and the tools the checks use.
const std::vector<std::string> kBasePackages{
    "systemd",
    "dbus",
    "curl",
    "python3",
    "iproute2",
    "procps",
    "ca-certificates",
    "passwd",
    // A lingering user's manager: user@.service gets its XDG_RUNTIME_DIR from pam_systemd, and systemd-run --user
    // reaches it over the user's bus.
    "libpam-systemd",
    "dbus-user-session",
};

// The daemon's configuration inside the container: the shipped one plus a
// resolver override that sends upstream.test to the fake upstream on
// loopback (the container has no other network).
const std::string kDaemonConfig = R"({
  "store": { "retention": { "max_age_days": 90, "max_megabytes": 2048 } },
  "proxy": {
    "hosts": { "upstream.test": ["127.0.0.7"] },
    "allowed_upstreams": ["127.0.0.7"],
    "upstream_ca_file": "/etc/tameflare/e2e-upstream-ca.pem"
  }
}
)";

// The test CA of the HTTPS upstream and its certificate for upstream.test,
// made inside the container (the daemon verifies the upstream against it).
const std::string kMakeUpstreamCertificates = R"SH(set -e
cd /root/e2e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
  -out /etc/tameflare/e2e-upstream-ca.pem -days 2 -subj /CN=e2e-upstream-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
  -subj /CN=upstream.test 2>/dev/null
printf 'subjectAltName=DNS:upstream.test\nextendedKeyUsage=serverAuth\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA /etc/tameflare/e2e-upstream-ca.pem -CAkey ca.key -CAcreateserial \
  -out leaf.pem -days 2 -extfile leaf.ext 2>/dev/null
)SH";

const std::string kGateway = R"({
  "name": "e2e",
  "description": "end-to-end test: GET allowed, POST held for a human, DELETE denied",
  "approval_timeout_seconds": 120,
  "launch": { "groups": ["tameflare-member"] },
  "connectors": {
    "upstream": {
      "connector": "http",
      "domains": ["upstream.test"],
      "credential": "e2e-token",
      "rules": [
        { "action": "http.get", "decision": "allow" },
        { "action": "http.post", "decision": "require_approval" },
        { "action": "http.delete", "decision": "deny" }
      ]
    }
  }
}
)";

// A service the daemon did not launch, put under the gateway by the drop-in
// the package ships as an example (/usr/share/doc/tameflare/examples/
// tameflare-enforce.conf), that keeps trying an allowed request, the same
// over HTTPS (intercepted: it trusts the interception CA only through the
// drop-in) and a bypass while the daemon restarts.
const std::string kTrafficUnit = R"([Unit]
Description=e2e: traffic of an existing service under enforcement

[Service]
Type=exec
ExecStart=/bin/sh /root/e2e/traffic.sh 180
)";

const std::string kTrafficScript = R"SH(#!/bin/sh
# One allowed request (by name, redirected to the proxy) and one bypass
# attempt (straight to the upstream's address, proxies ignored) at a time.
end=$(( $(date +%s) + $1 ))
i=0
while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    a=$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H "X-E2E-Probe: restart-allowed-$i" http://upstream.test:8080/restart-allowed/$i)
    b=$(curl -s -m 2 --noproxy '*' -o /dev/null -w '%{http_code}' -H "X-E2E-Probe: restart-bypass-$i" http://127.0.0.7:8080/restart-bypass/$i)
    c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H "X-E2E-Probe: restart-https-$i" https://upstream.test:8443/restart-https/$i)
    echo "$i $(date +%s.%N) allowed=$a bypass=$b https=$c" >> /root/e2e/traffic.log
    sleep 0.1
done
)SH";

struct Timing {
    std::string what;
    double seconds;
};

class SystemdE2E : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        std::cout << std::unitbuf;  // progress as it happens, also into ctest's log
        const auto started = Clock::now();
        try {
            set_up();
        } catch (const std::exception& error) {
            setup_error_ = std::string("set-up threw: ") + error.what();
        }
        timings_.push_back({"set-up total", seconds_since(started)});
        if (!setup_error_.empty()) std::cout << "[e2e] SET-UP FAILED: " << setup_error_ << "\n";
        if (!skip_.empty()) std::cout << "[e2e] SKIPPED: " << skip_ << "\n";
    }

    static void TearDownTestSuite() {
        const auto started = Clock::now();
        const bool keep = std::getenv("TF_E2E_KEEP") != nullptr;
        if (container_ && keep) {
            std::cout << "[e2e] TF_E2E_KEEP: the container runs on; enter it with\n    nsenter --target "
                      << container_->leader() << " --all --root --wd /bin/bash\n  stop it with\n    kill -RTMIN+4 "
                      << container_->leader() << "; rm -rf " << scratch_ << "\n";
            container_.release();  // NOLINT: deliberately left running
        } else if (container_) {
            const auto stopping = Clock::now();
            std::cout << "[e2e] container " << container_->stop(60s) << "\n";
            if (seconds_since(stopping) > 15) {
                const std::string console = read_file(scratch_ / "console.log");
                std::cout << "[e2e] slow poweroff; the console's end:\n"
                          << console.substr(console.size() > 4000 ? console.size() - 4000 : 0) << "\n";
            }
            container_.reset();
        }
        if (!scratch_.empty() && !keep) {
            std::error_code ignored;
            fs::remove_all(scratch_, ignored);
        }
        timings_.push_back({"tear-down", seconds_since(started)});
        std::cout << "[e2e] timings:\n";
        for (const auto& [what, seconds] : timings_) {
            std::cout << "  " << std::left << std::setw(52) << what << std::right << std::fixed << std::setprecision(1)
                      << std::setw(7) << seconds << " s\n";
        }
    }

    void SetUp() override {
        if (!skip_.empty()) GTEST_SKIP() << skip_;
        if (!setup_error_.empty()) FAIL() << setup_error_;
        started_ = Clock::now();
    }
    void TearDown() override {
        if (HasFailure() && container_) {
            std::cout
                << "[e2e] after the failure, the service's last journal lines:\n"
                << quiet(
                       "systemctl status tameflared.service --no-pager -n 0 2>&1 | head -n 12; "
                       "journalctl -u tameflared.service -u e2e-traffic.service --no-pager -n 30 -o short-monotonic")
                << "\n";
        }
        if (started_) {
            timings_.push_back(
                {::testing::UnitTest::GetInstance()->current_test_info()->name(), seconds_since(*started_)});
        }
    }

    static double seconds_since(Clock::time_point start) {
        return std::chrono::duration<double>(Clock::now() - start).count();
    }

    static void set_up() {
        if (const std::string reason = host_unsupported_reason(); !reason.empty()) {
            skip_ = reason;
            return;
        }
        for (const char* tool : {"systemd-nspawn", "debootstrap", "nsenter", "dpkg-deb", "cp"}) {
            if (run({"sh", "-c", std::string("command -v ") + tool}).status != 0) {
                setup_error_ =
                    std::string(tool) + " is missing: run ./build.sh deps (it installs every package the tests need)";
                return;
            }
        }
        std::string pattern = "/var/tmp/tf-e2e-XXXXXX";
        if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        scratch_ = pattern;
        std::cout << "[e2e] scratch directory " << scratch_ << "\n";

        // 1. The package, made the documented way.
        auto step = Clock::now();
        const Result cpack = run(
            {TF_CPACK_COMMAND, "--config", TF_BINARY_DIR "/CPackConfig.cmake", "-B", (scratch_ / "package").string()},
            600s);
        timings_.push_back({"cpack (the .deb)", seconds_since(step)});
        for (const auto& entry :
             fs::directory_iterator(scratch_ / "package", std::filesystem::directory_options::none)) {
            if (entry.path().extension() == ".deb") deb_ = entry.path();
        }
        if (cpack.status != 0 || deb_.empty()) {
            setup_error_ = "cpack failed (exit " + std::to_string(cpack.status) + "):\n" + cpack.out + cpack.err;
            return;
        }
        std::cout << "[e2e] package " << deb_ << "\n";

        // 2. The Debian root, with the package's Depends so dpkg -i works offline.
        std::vector<std::string> packages = kBasePackages;
        const Result depends = run({"dpkg-deb", "--field", deb_.string(), "Depends"});
        std::istringstream list(depends.out);
        std::string item;
        while (std::getline(list, item, ',')) {
            item = trim(item.substr(0, item.find('|')));  // the first alternative
            item = trim(item.substr(0, item.find_first_of(" (:")));
            if (!item.empty()) packages.push_back(item);
        }
        const char* cache_env = std::getenv("TF_E2E_CACHE");
        RootCache cache{cache_env != nullptr ? fs::path(cache_env) : fs::path("/var/cache/tameflare-e2e"), kSuite,
                        packages};
        fs::create_directories(cache.cache_dir);
        step = Clock::now();
        std::string log;
        std::string skip;
        const auto cached = cache.get(log, skip);
        timings_.push_back({"Debian root (debootstrap or cache)", seconds_since(step)});
        std::cout << "[e2e] " << log;
        if (!skip.empty()) {
            skip_ = skip;
            std::cout << "\n[e2e] ***********************************************************************\n"
                      << "[e2e] *** SKIPPING THE END-TO-END TEST: " << skip << "\n"
                      << "[e2e] ***********************************************************************\n";
            return;
        }
        if (!cached) {
            setup_error_ = "could not build the Debian root:\n" + log;
            return;
        }

        // 3. A scratch copy of it, with the package and the test's files.
        step = Clock::now();
        root_ = scratch_ / "root";
        const Result copy = run({"cp", "-a", "--reflink=auto", cached->string(), root_.string()}, 300s);
        timings_.push_back({"copy of the root", seconds_since(step)});
        if (copy.status != 0) {
            setup_error_ = "copying the root failed: " + copy.err;
            return;
        }
        const fs::path files = root_ / "root" / "e2e";
        fs::create_directories(files);
        fs::copy_file(deb_, files / "tameflare.deb");
        fs::copy_file(TF_SOURCE_DIR "/tests/e2e/upstream.py", files / "upstream.py");
        write_file(files / "traffic.sh", kTrafficScript, fs::perms(0755));

        // 4. dpkg -i without systemd as PID 1 (nspawn without --boot: the
        //    maintainer scripts' chroot path).
        step = Clock::now();
        preboot_install_ = run({"systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--private-network",
                                "--directory=" + root_.string(), "--machine=tf-e2e-install-" + std::to_string(getpid()),
                                "dpkg", "-i", "/root/e2e/tameflare.deb"},
                               180s, "", {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1"});
        remove_nspawn_leftovers("tf-e2e-install-" + std::to_string(getpid()));
        timings_.push_back({"dpkg -i without systemd (nspawn, no boot)", seconds_since(step)});

        // 5. Boot. A private network: the container has only its loopback
        //    (the fake upstream lives there). CAP_BPF, CAP_PERFMON and
        //    CAP_NET_ADMIN for the daemon's BPF programs and namespaces,
        //    CAP_SYS_RESOURCE for its memlock limit. nspawn's seccomp filter
        //    refuses bpf() whatever the capabilities (systemd 252): allowed
        //    with --system-call-filter (commands entered with nsenter are not
        //    under that filter; the container's services are). nspawn's /sys is a read-only tmpfs
        //    without /sys/fs/bpf, where a booted host's systemd has mounted
        //    bpffs: the container gets a bpffs instance of its own there.
        step = Clock::now();
        container_ = std::make_unique<Container>(
            Container::Options{root_,
                               "tf-e2e-" + std::to_string(getpid()),
                               scratch_ / "console.log",
                               {"--private-network", "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_RESOURCE",
                                // bpf, and Landlock for the agents' sandbox: nspawn's own filter refuses them.
                                "--system-call-filter=bpf landlock_create_ruleset landlock_add_rule "
                                "landlock_restrict_self"},
                               scratch_ / "bpffs"});
        std::string error;
        if (!container_->start(error)) {
            setup_error_ = "systemd-nspawn did not start: " + error;
            return;
        }
        system_state_ = container_->wait_booted(120s);
        timings_.push_back({"boot (is-system-running --wait)", seconds_since(step)});
        std::cout << "[e2e] container leader pid " << container_->leader() << ", system state " << system_state_
                  << "\n";
        if (system_state_ != "running" && system_state_ != "degraded") {
            setup_error_ = "the container did not boot: " + system_state_ + "\n" + read_file(scratch_ / "console.log");
        }
    }

    // A script inside the container, printed when it fails.
    static Result in(const std::string& script, Seconds deadline = 60s, const std::string& input = "") {
        Result result = container_->sh(script, deadline, input);
        if (result.status != 0 || result.timed_out) {
            std::cout << "[e2e] $ " << script << "\n[e2e]   exit " << result.status
                      << (result.timed_out ? " (timed out)" : "") << "\n"
                      << result.out << result.err;
        }
        return result;
    }
    static std::string quiet(const std::string& script, Seconds deadline = 30s) {
        return trim(container_->sh(script, deadline).out);
    }

    // The daemon configured for the test and started, once (later tests
    // call it too, so that a filtered run works).
    static bool ensure_service(std::string& why) {
        if (quiet("systemctl is-active tameflared.service") == "active") return true;
        if (!configured_) {
            const fs::path etc = root_ / "etc" / "tameflare";
            write_file(etc / "tameflared.json", kDaemonConfig, fs::perms(0644));
            write_file(etc / "gateways.d" / "e2e.json", kGateway, fs::perms(0644));
            write_file(root_ / "etc" / "systemd" / "system" / "e2e-traffic.service", kTrafficUnit, fs::perms(0644));
            in("echo '127.0.0.7 upstream.test' >> /etc/hosts && mkdir -p /etc/systemd/system/e2e-traffic.service.d && "
               "sed 's/^Environment=TAMEFLARE_GATEWAY=.*/Environment=TAMEFLARE_GATEWAY=e2e/' "
               "/usr/share/doc/tameflare/examples/tameflare-enforce.conf "
               "> /etc/systemd/system/e2e-traffic.service.d/tameflare.conf && systemctl daemon-reload");
            const Result certificates = in(kMakeUpstreamCertificates);
            if (certificates.status != 0) {
                why = "cannot make the upstream's test certificates: " + certificates.out + certificates.err;
                return false;
            }
            const Result upstream = in(std::string("systemd-run --unit=e2e-upstream --service-type=exec "
                                                   "/usr/bin/python3 /root/e2e/upstream.py ") +
                                       kUpstreamAddress + " " + kUpstreamPort + " /root/e2e/upstream.jsonl");
            const Result upstream_tls = in(std::string("systemd-run --unit=e2e-upstream-tls --service-type=exec "
                                                       "/usr/bin/python3 /root/e2e/upstream.py ") +
                                           kUpstreamAddress + " " + kUpstreamTlsPort +
                                           " /root/e2e/upstream.jsonl /root/e2e/leaf.pem /root/e2e/leaf.key");
            const Result ready =
                in(std::string("for i in $(seq 50); do curl -sf -o /dev/null -H 'X-E2E-Probe: ready' "
                               "http://") +
                   kUpstreamAddress + ":" + kUpstreamPort + "/ready && exit 0; sleep 0.1; done; exit 1");
            if (upstream.status != 0 || upstream_tls.status != 0 || ready.status != 0) {
                why = "the fake upstream did not start: " + quiet("journalctl -u e2e-upstream --no-pager | tail -20");
                return false;
            }
            configured_ = true;
        }
        const Result start = in("systemctl enable --now tameflared.service", 90s);
        enable_status_ = start.status;
        if (start.status != 0) {
            why = "systemctl enable --now tameflared failed (exit " + std::to_string(start.status) + "):\n" +
                  start.out + start.err + "\n" +
                  quiet("systemctl status tameflared.service --no-pager -l; journalctl -u tameflared --no-pager -n 40");
            return false;
        }
        if (!vault_set_) {
            const Result vault =
                in("tf vault set e2e-token --connector http", 30s, kSecret);  // the value on stdin, never an argument
            vault_set_ = vault.status == 0;
            if (!vault_set_) {
                why = "tf vault set failed: " + vault.out + vault.err;
                return false;
            }
        }
        return true;
    }

    // The fake upstream's log, one JSON object a request.
    static std::vector<nlohmann::json> upstream_log() {
        std::vector<nlohmann::json> records;
        std::istringstream lines(read_file(root_ / "root" / "e2e" / "upstream.jsonl"));
        std::string line;
        while (std::getline(lines, line)) {
            if (!line.empty()) records.push_back(nlohmann::json::parse(line, nullptr, false));
        }
        return records;
    }
    static std::vector<nlohmann::json> upstream_requests(const std::string& probe_prefix) {
        std::vector<nlohmann::json> out;
        for (const auto& record : upstream_log()) {
            const auto probe =
                record.value("probe", nlohmann::json()).is_string() ? record["probe"].get<std::string>() : "";
            if (probe.rfind(probe_prefix, 0) == 0) out.push_back(record);
        }
        return out;
    }
    static std::string bearer() { return std::string("Bearer ") + kSecret; }

    static std::string curl(const std::string& options, const std::string& probe, const std::string& url) {
        return "curl -sS -m 20 -o /dev/null -w '%{http_code}' " + options + " -H 'X-E2E-Probe: " + probe + "' " + url;
    }
    static std::string upstream_url(const std::string& host, const std::string& path) {
        return "http://" + host + ":" + kUpstreamPort + path;
    }

    static inline std::string skip_;
    static inline std::string setup_error_;
    static inline fs::path scratch_;
    static inline fs::path root_;
    static inline fs::path deb_;
    static inline Result preboot_install_;
    static inline std::string system_state_;
    static inline std::unique_ptr<Container> container_;
    static inline std::vector<Timing> timings_;
    static inline bool configured_ = false;
    static inline bool vault_set_ = false;
    static inline int enable_status_ = -1;
    std::optional<Clock::time_point> started_;
};

TEST_F(SystemdE2E, PackageHasTheFhsLayoutDependsAndMaintainerScripts) {
    const Result info = run({"dpkg-deb", "--info", deb_.string()});
    ASSERT_EQ(info.status, 0) << info.err;
    std::cout << info.out;
    for (const char* field : {"Package: tameflare", "Section: admin", "Maintainer: ", "Architecture: "}) {
        EXPECT_NE(info.out.find(field), std::string::npos) << "no " << field;
    }
    const std::string depends = run({"dpkg-deb", "--field", deb_.string(), "Depends"}).out;
    for (const char* package : {"libssl3", "libsqlite3-0", "libre2-9", "libbpf1", "libnl-3-200", "libnl-route-3-200",
                                "libldns3", "libsystemd0", "libstdc++6", "dbus", "systemd"}) {
        EXPECT_NE(depends.find(package), std::string::npos) << package << " missing from Depends: " << depends;
    }
    const Result contents = run({"dpkg-deb", "--contents", deb_.string()});
    ASSERT_EQ(contents.status, 0) << contents.err;
    for (const char* path :
         {"./usr/sbin/tameflared", "./usr/bin/tf", "./usr/libexec/tameflare/tameflare-dataplane",
          "./usr/share/tameflare/connectors/github.json", "./usr/share/bash-completion/completions/tf",
          "./usr/share/doc/tameflare/README.md", "./usr/share/doc/tameflare/docs/api.md",
          "./etc/tameflare/tameflared.json", "./etc/tameflare/gateways.d/agents.json", "./etc/tameflare/connectors.d/",
          "./usr/share/doc/tameflare/examples/gateways/dev-bot.json",
          "./usr/share/doc/tameflare/examples/gateways/github-runner.json",
          "./usr/share/dbus-1/system.d/com.tameflare.Daemon1.conf",
          "./usr/share/dbus-1/interfaces/com.tameflare.Daemon1.xml",
          // systemd/ (the service-integration work):
          "./usr/lib/systemd/system/tameflared.service", "./usr/lib/systemd/system/tameflared-api.socket",
          "./usr/share/doc/tameflare/examples/tameflare-enforce.conf", "./usr/lib/sysusers.d/tameflare.conf",
          "./usr/lib/tmpfiles.d/tameflare.conf", "./usr/share/dbus-1/system-services/com.tameflare.Daemon1.service"}) {
        EXPECT_NE(contents.out.find(std::string(path) + "\n"), std::string::npos) << "the package lacks " << path;
    }
    EXPECT_EQ(contents.out.find("./usr/local/"), std::string::npos) << contents.out;
    // The example gateways are documentation, not live; none carries the explicit-proxy token hash (the example
    // token is public).
    EXPECT_FALSE(fs::exists(root_ / "etc" / "tameflare" / "gateways.d" / "dev-bot.json"));
    EXPECT_EQ(read_file(root_ / "usr" / "share" / "doc" / "tameflare" / "examples" / "gateways" / "dev-bot.json")
                  .find("proxy_token_sha256"),
              std::string::npos);
    const Result control = run({"dpkg-deb", "--ctrl-tarfile", deb_.string()});
    for (const char* member : {"./conffiles", "./postinst", "./prerm", "./postrm"}) {
        EXPECT_NE(
            run({"sh", "-c", "dpkg-deb --ctrl-tarfile " + shell_quote(deb_.string()) + " | tar -t"}).out.find(member),
            std::string::npos)
            << "no " << member << " in the control archive";
    }
    const std::string conffiles =
        run({"sh", "-c", "dpkg-deb --ctrl-tarfile " + shell_quote(deb_.string()) + " | tar -xO ./conffiles"}).out;
    EXPECT_NE(conffiles.find("/etc/tameflare/tameflared.json\n"), std::string::npos) << conffiles;
    EXPECT_NE(conffiles.find("/etc/tameflare/gateways.d/agents.json\n"), std::string::npos) << conffiles;
    EXPECT_EQ(conffiles.find("/etc/tameflare/gateways.d/ci.json\n"), std::string::npos) << conffiles;
}

TEST_F(SystemdE2E, InstallsWithoutSystemdAsPid1) {
    EXPECT_EQ(preboot_install_.status, 0) << preboot_install_.out << preboot_install_.err;
    const std::string groups = read_file(root_ / "etc" / "group");
    for (const char* group : {"tameflare-owner", "tameflare-admin", "tameflare-member", "tameflare-viewer"}) {
        EXPECT_NE(groups.find(std::string("\n") + group + ":"), std::string::npos)
            << group << " was not created by postinst (systemd-sysusers)";
    }
    EXPECT_TRUE(fs::is_directory(root_ / "var" / "lib" / "tameflare")) << "systemd-tmpfiles --create did not run";
}

TEST_F(SystemdE2E, BootsAndReinstallsOnTheRunningSystem) {
    if (system_state_ == "degraded") {
        std::cout << "[e2e] degraded: failed units:\n" << quiet("systemctl --failed --no-legend --plain") << "\n";
    }
    EXPECT_TRUE(system_state_ == "running" || system_state_ == "degraded") << system_state_;
    // The same package again, now with systemd running: daemon-reload and the
    // D-Bus reload paths of postinst.
    const Result reinstall = in("dpkg -i --force-confold /root/e2e/tameflare.deb", 120s);
    EXPECT_EQ(reinstall.status, 0) << reinstall.out << reinstall.err;
    EXPECT_EQ(quiet("systemctl is-enabled tameflared.service"), "disabled")
        << "the package must not enable the service by itself (docs/packaging.md)";
    EXPECT_EQ(quiet("systemctl is-active tameflared.service"), "inactive");
}

TEST_F(SystemdE2E, ShippedConfigurationIsValid) {
    const Result check = in("tameflared --check-config");
    EXPECT_EQ(check.status, 0) << check.out << check.err;
    EXPECT_NE((check.out + check.err).find("gateway agents"), std::string::npos) << check.out << check.err;
    // The examples in the documentation load against the installed connectors, as an admin copies them.
    const Result examples = in("tameflared --check-config --gateways-dir /usr/share/doc/tameflare/examples/gateways");
    EXPECT_EQ(examples.status, 0) << examples.out << examples.err;
    const Result verify =
        in("systemd-analyze verify /usr/lib/systemd/system/tameflared.service "
           "/usr/lib/systemd/system/tameflared-api.socket 2>&1");
    EXPECT_EQ(verify.status, 0) << verify.out;
}

TEST_F(SystemdE2E, EnableNowReachesActiveWithReady) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    const std::string props =
        quiet("systemctl show tameflared.service -p ActiveState -p SubState -p Type -p StatusText -p MainPID");
    std::cout << "[e2e] " << props << "\n";
    EXPECT_NE(props.find("ActiveState=active"), std::string::npos) << props;
    EXPECT_NE(props.find("SubState=running"), std::string::npos) << props;
    // Type=notify: "active" means the daemon sent READY=1.
    EXPECT_NE(props.find("Type=notify"), std::string::npos) << props;
    EXPECT_EQ(props.find("StatusText=\n"), std::string::npos) << "no STATUS= from the daemon: " << props;
    EXPECT_EQ(quiet("systemctl is-enabled tameflared.service"), "enabled");
    // The unit's exposure as systemd rates it (docs/operations.md): recorded, not asserted.
    const Result security = in("systemd-analyze security --no-pager tameflared.service 2>&1");
    const auto overall = security.out.find("Overall exposure level");
    ASSERT_NE(overall, std::string::npos) << security.out;
    std::cout << "[e2e] systemd-analyze security: "
              << security.out.substr(overall, security.out.find('\n', overall) - overall) << "\n";
}

TEST_F(SystemdE2E, DbusInterfaceOnTheSystemBus) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    const Result introspect = in("busctl --no-pager introspect com.tameflare.Daemon1 /com/tameflare/Daemon1");
    EXPECT_EQ(introspect.status, 0) << introspect.err;
    EXPECT_NE(introspect.out.find("com.tameflare.Daemon1"), std::string::npos) << introspect.out;
    const Result status =
        in("busctl --no-pager call com.tameflare.Daemon1 /com/tameflare/Daemon1 "
           "com.tameflare.Daemon1 GetStatus");
    EXPECT_EQ(status.status, 0) << status.out << status.err;

    // Bus activation: with the service stopped, a call starts it (the
    // activation file names dbus-com.tameflare.Daemon1.service, the alias
    // that `systemctl enable` made) and is answered.
    ASSERT_EQ(in("systemctl stop tameflared.service").status, 0);
    EXPECT_EQ(quiet("systemctl is-active tameflared.service"), "inactive");
    const Result activated =
        in("busctl --no-pager --timeout=60 call com.tameflare.Daemon1 /com/tameflare/Daemon1 "
           "com.tameflare.Daemon1 GetStatus",
           90s);
    EXPECT_EQ(activated.status, 0) << activated.out << activated.err
                                   << quiet("journalctl --no-pager -n 20 -u dbus -u tameflared");
    EXPECT_EQ(quiet("systemctl is-active tameflared.service"), "active");
}

TEST_F(SystemdE2E, AgentAllowedDeniedAndBypass) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    const std::string upstream = upstream_url("upstream.test", "");
    // Allowed: forwarded by the proxy with the credential from the vault.
    const Result allowed =
        in("tf run --gateway e2e -- " + curl("", "allowed", upstream_url("upstream.test", "/allowed")));
    EXPECT_EQ(allowed.status, 0) << allowed.err;
    EXPECT_EQ(allowed.out, "200") << allowed.err;
    const auto forwarded = upstream_requests("allowed");
    ASSERT_EQ(forwarded.size(), 1U);
    EXPECT_EQ(forwarded[0].value("auth", nlohmann::json()), bearer()) << forwarded[0].dump();

    // Denied by policy: 403 from the proxy, nothing upstream.
    const Result denied =
        in("tf run --gateway e2e -- " + curl("-X DELETE", "denied", upstream_url("upstream.test", "/denied")));
    EXPECT_EQ(denied.out, "403") << denied.err;

    // Bypasses: proxies ignored, the upstream's address dialed directly, from
    // an agent in its own network namespace and from one that shares the
    // container's (where only the BPF programs stand in the way).
    for (const char* isolation : {"netns", "cgroup"}) {
        const std::string probe = std::string("bypass-") + isolation;
        const Result bypass = in(std::string("tf run --isolation ") + isolation + " --gateway e2e -- " +
                                 curl("--noproxy '*'", probe, upstream_url(kUpstreamAddress, "/bypass")));
        EXPECT_NE(bypass.out, "200") << isolation << ": " << bypass.err;
        std::cout << "[e2e] bypass from " << isolation << " isolation: HTTP " << bypass.out << " " << trim(bypass.err)
                  << "\n";
        // And through python's sockets, no HTTP library: a raw TCP connect.
        const Result raw =
            in(std::string("tf run --isolation ") + isolation +
               " --gateway e2e -- python3 -c \"import socket; s=socket.create_connection(('" + kUpstreamAddress +
               "', " + kUpstreamPort + "), 5); s.sendall(b'GET /raw HTTP/1.1\\r\\nHost: x\\r\\nX-E2E-Probe: " + probe +
               "-raw\\r\\n\\r\\n'); print(s.recv(100)[:12])\"");
        std::cout << "[e2e] raw connect from " << isolation << ": " << trim(raw.out) << " " << trim(raw.err) << "\n";
    }
    EXPECT_TRUE(upstream_requests("denied").empty());
    EXPECT_TRUE(upstream_requests("bypass").empty())
        << "a bypass reached the upstream: " << upstream_requests("bypass")[0].dump();
}

TEST_F(SystemdE2E, MemberApprovesAHeldRequest) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    ASSERT_EQ(in(kAddMember).status, 0);
    // The agent's POST waits for a human.
    const fs::path held_out = scratch_ / "held.out";
    Background agent(container_->sh_argv("tf run --gateway e2e -- " +
                                         curl("-X POST -d x=1 -m 100", "held", upstream_url("upstream.test", "/held"))),
                     held_out);
    std::string id;
    for (int i = 0; i < 100 && id.empty() && !agent.poll(); ++i) {
        id = quiet("tf approvals list -q 2>/dev/null | head -n 1");
        if (id.empty()) std::this_thread::sleep_for(200ms);
    }
    ASSERT_FALSE(id.empty()) << "no held request appeared: " << quiet("tf approvals list 2>&1") << read_file(held_out);
    EXPECT_TRUE(upstream_requests("held").empty()) << "forwarded before anyone approved it";
    const std::string approve =
        std::string("runuser -u ") + kMember + " -- tf approvals approve " + id + " --note 'e2e: approved by a member'";
    const Result approved = in(approve);
    EXPECT_EQ(approved.status, 0) << "as a user in tameflare-member only (" << quiet(std::string("id ") + kMember)
                                  << "): " << approved.out << approved.err;
    if (approved.status != 0) {
        // Tell whether the socket's group is what stood in the way.
        in(std::string("usermod -aG tameflare-viewer ") + kMember);
        const Result again = in(approve);
        std::cout << "[e2e] with tameflare-viewer too: exit " << again.status << " " << again.out << again.err << "\n";
    }
    const auto status = agent.wait(60s);
    ASSERT_TRUE(status.has_value()) << "the held agent did not finish";
    EXPECT_EQ(*status, 0) << read_file(held_out);
    EXPECT_NE(read_file(held_out).find("200"), std::string::npos) << read_file(held_out);
    const auto forwarded = upstream_requests("held");
    ASSERT_EQ(forwarded.size(), 1U);
    EXPECT_EQ(forwarded[0].value("auth", nlohmann::json()), bearer());
}

// A user (not root) launches an agent from their home directory, which the
// unit's ProtectHome= hides from the daemon: the agent still works there (it
// starts in a copy of its caller's mount namespace) and is enforced.
TEST_F(SystemdE2E, AUserLaunchesAnAgentFromTheirHomeUnderTheHardenedUnit) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    ASSERT_EQ(in(kAddMember).status, 0);
    const std::string home = std::string("/home/") + kMember;
    ASSERT_EQ(in("runuser -u " + std::string(kMember) + " -- sh -c 'echo mine > " + home + "/marker'").status, 0);
    const Result agent = in("cd " + home + " && runuser -u " + kMember + " -- tf run --gateway e2e -- sh -c " +
                            shell_quote("cat " + home + "/marker; id -un; " +
                                        curl("", "user-allowed", upstream_url("upstream.test", "/user"))));
    EXPECT_EQ(agent.status, 0) << agent.out << agent.err << quiet("journalctl -u tameflared --no-pager -n 20");
    EXPECT_EQ(agent.out, std::string("mine\n") + kMember + "\n200") << agent.err;
    const auto forwarded = upstream_requests("user-allowed");
    ASSERT_EQ(forwarded.size(), 1U);
    EXPECT_EQ(forwarded[0].value("auth", nlohmann::json()), bearer()) << forwarded[0].dump();
}

// A lingering user's own service manager runs outside every agent and starts
// whatever it is asked to (systemd-run --user): an agent of that user must not
// reach it, whether or not it knows where it listens.
TEST_F(SystemdE2E, ALingeringUsersAgentCannotStartAnythingThroughSystemdUser) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    ASSERT_EQ(in(kAddMember).status, 0);
    const std::string uid = quiet(std::string("id -u ") + kMember);
    const std::string runtime = "/run/user/" + uid;
    ASSERT_EQ(in(std::string("loginctl enable-linger ") + kMember).status, 0);
    ASSERT_EQ(
        in("for i in $(seq 100); do [ -S " + runtime + "/systemd/private ] && exit 0; sleep 0.2; done; exit 1").status,
        0)
        << quiet("systemctl status user@" + uid + ".service --no-pager");
    const std::string as_member = std::string("runuser -u ") + kMember + " -- env XDG_RUNTIME_DIR=" + runtime + " ";
    // Outside an agent the user's manager does start a unit: the test can see it when it happens.
    const Result outside = in(as_member + "systemd-run --user --quiet --wait touch /tmp/tf-e2e-user-outside");
    ASSERT_EQ(outside.status, 0) << outside.err;
    ASSERT_EQ(in("test -e /tmp/tf-e2e-user-outside").status, 0);

    const Result agent =
        in("cd /tmp && " + as_member + "tf run --gateway e2e -- sh -c " +
           shell_quote("echo runtime=${XDG_RUNTIME_DIR:-unset}; "
                       "systemd-run --user --quiet --wait touch /tmp/tf-e2e-user-a 2>&1; echo stripped=$?; "
                       "XDG_RUNTIME_DIR=" +
                       runtime + " systemd-run --user --quiet --wait touch /tmp/tf-e2e-user-b 2>&1; echo direct=$?"));
    EXPECT_EQ(agent.status, 0) << agent.err;
    std::cout << "[e2e] systemd-run --user from an agent: " << trim(agent.out) << "\n";
    EXPECT_NE(agent.out.find("runtime=unset"), std::string::npos) << agent.out;
    EXPECT_EQ(agent.out.find("stripped=0"), std::string::npos) << agent.out;
    // Told where the user's bus is, the agent is refused by the kernel's unix socket filter.
    EXPECT_NE(agent.out.find("Operation not permitted\ndirect="), std::string::npos) << agent.out;
    EXPECT_EQ(agent.out.find("direct=0"), std::string::npos) << agent.out;
    EXPECT_NE(in("sleep 1; test -e /tmp/tf-e2e-user-a || test -e /tmp/tf-e2e-user-b").status, 0)
        << "the user's manager started a unit for the agent";
    in(std::string("loginctl disable-linger ") + kMember);
}

TEST_F(SystemdE2E, RestartUnderTrafficLetsNoConnectionEscape) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    const Result start = in("systemctl start e2e-traffic.service");
    ASSERT_EQ(start.status, 0) << quiet("journalctl -u e2e-traffic --no-pager -n 30");
    const auto count_ok = [](const std::string& log, std::size_t from_line) {
        std::istringstream lines(log);
        std::string line;
        std::size_t n = 0;
        std::size_t ok = 0;
        while (std::getline(lines, line)) {
            if (n++ >= from_line && line.find("allowed=200") != std::string::npos) ++ok;
        }
        return std::make_pair(n, ok);
    };
    const fs::path traffic = root_ / "root" / "e2e" / "traffic.log";
    const auto wait_for_ok = [&](std::size_t from_line, std::size_t want, Seconds deadline) {
        const auto end = Clock::now() + deadline;
        while (Clock::now() < end) {
            if (count_ok(read_file(traffic), from_line).second >= want) return true;
            std::this_thread::sleep_for(200ms);
        }
        return false;
    };
    EXPECT_TRUE(wait_for_ok(0, 3, 30s)) << "no allowed request of the enforced service succeeded before the restart:\n"
                                        << read_file(traffic) << quiet("journalctl -u e2e-traffic --no-pager -n 30");
    const std::size_t before = count_ok(read_file(traffic), 0).first;
    const std::string invocation = quiet("systemctl show -p InvocationID --value e2e-traffic.service");
    const auto restart_started = Clock::now();
    const Result restart = in("systemctl restart tameflared.service", 90s);
    const double restart_seconds = seconds_since(restart_started);
    EXPECT_EQ(restart.status, 0);
    // The drop-in says the enforced unit keeps running while tameflared restarts.
    EXPECT_EQ(quiet("systemctl show -p InvocationID --value e2e-traffic.service"), invocation)
        << "restarting tameflared restarted the enforced service too (a Requires= on tameflared.service "
           "propagates restarts; Wants= with After= would not)";
    const std::size_t after = count_ok(read_file(traffic), 0).first;
    EXPECT_TRUE(wait_for_ok(after, 3, 30s)) << "allowed requests did not resume after the restart:\n"
                                            << read_file(traffic);
    in("systemctl stop e2e-traffic.service");
    const std::string log = read_file(traffic);
    std::cout << "[e2e] restart took " << restart_seconds << " s; requests before it: " << before
              << ", during it: " << (after - before) << ", total " << count_ok(log, 0).first << "\n";
    // During the restart: lines whose allowed request did not get 200.
    std::istringstream lines(log);
    std::string line;
    int failed_allowed = 0;
    int https_ok = 0;
    while (std::getline(lines, line)) {
        if (line.find("allowed=200") == std::string::npos) ++failed_allowed;
        if (line.find("https=200") != std::string::npos) ++https_ok;
        EXPECT_EQ(line.find("bypass=200"), std::string::npos) << "a bypass got an answer from the upstream: " << line;
    }
    std::cout << "[e2e] allowed requests that failed (daemon down, connection refused): " << failed_allowed << "\n";
    const auto bypasses = upstream_requests("restart-bypass");
    EXPECT_TRUE(bypasses.empty()) << bypasses.size() << " bypass attempts reached the upstream, e.g. "
                                  << bypasses[0].dump();
    for (const auto& record : upstream_requests("restart-allowed")) {
        EXPECT_EQ(record.value("auth", nlohmann::json()), bearer())
            << "reached the upstream without passing the proxy: " << record.dump();
    }
    // HTTPS from the enforced unit: intercepted, and trusted through the drop-in's CA lines (curl reads the
    // distribution bundle, which the drop-in covers with tameflared's).
    std::cout << "[e2e] HTTPS requests of the enforced service that succeeded: " << https_ok << "\n";
    EXPECT_GE(https_ok, 3) << log << quiet("journalctl -u tameflared --no-pager -n 30");
    const auto https = upstream_requests("restart-https");
    EXPECT_FALSE(https.empty());
    for (const auto& record : https) {
        EXPECT_EQ(record.value("auth", nlohmann::json()), bearer())
            << "reached the upstream without passing the proxy: " << record.dump();
    }
    // The unit got the CA environment too.
    const std::string environment = quiet("systemctl show -p Environment --value e2e-traffic.service");
    EXPECT_NE(environment.find("SSL_CERT_FILE=/run/tameflare/ca-bundle.pem"), std::string::npos) << environment;
    EXPECT_NE(environment.find("-Djavax.net.ssl.trustStore=/run/tameflare/ca-trust.p12"), std::string::npos)
        << environment;
}

TEST_F(SystemdE2E, JournalHasStructuredDecisionRecords) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    // The denied DELETE of AgentAllowedDeniedAndBypass, or one made now.
    in("tf run --gateway e2e -- " + curl("-X DELETE", "denied-journal", upstream_url("upstream.test", "/denied")));
    in("journalctl --flush");
    std::string value_used;
    std::vector<nlohmann::json> records;
    for (const char* value : {"deny", "denied"}) {
        const Result query = in(std::string("journalctl -u tameflared.service -o json --no-pager DECISION=") + value);
        std::istringstream lines(query.out);
        std::string line;
        while (std::getline(lines, line)) {
            auto record = nlohmann::json::parse(line, nullptr, false);
            if (!record.is_discarded()) records.push_back(std::move(record));
        }
        if (!records.empty()) {
            value_used = value;
            break;
        }
    }
    ASSERT_FALSE(records.empty()) << "journalctl -u tameflared DECISION=deny (or =denied) finds nothing; the last "
                                     "lines of the unit, verbose:\n"
                                  << quiet("journalctl -u tameflared.service -o verbose --no-pager -n 3");
    std::cout << "[e2e] journalctl -u tameflared DECISION=" << value_used << ": " << records.size() << " records\n";
    bool found = false;
    for (const auto& record : records) {
        if (record.value("ACTION", "") == "http.delete" && record.value("GATEWAY", "") == "e2e") {
            found = true;
            EXPECT_TRUE(record.contains("MESSAGE_ID")) << record.dump();
            EXPECT_TRUE(record.contains("AGENT")) << record.dump();
        }
    }
    EXPECT_TRUE(found) << "no record with ACTION=http.delete GATEWAY=e2e: " << records.back().dump();
}

TEST_F(SystemdE2E, StopLeavesNothingButThePinnedEnforcement) {
    std::string why;
    ASSERT_TRUE(ensure_service(why)) << why;
    in("tf enforce --release --unit e2e-traffic.service 2>/dev/null || true");
    const Result stop = in("systemctl stop tameflared.service", 90s);
    EXPECT_EQ(stop.status, 0);
    EXPECT_EQ(quiet("systemctl is-active tameflared.service"), "inactive");
    EXPECT_EQ(quiet("pgrep -a tameflared || true"), "") << "a tameflared process is left";
    // No agent cgroups anywhere (the service's delegated subtree is gone, and
    // nothing is left under a root outside it).
    EXPECT_EQ(quiet("find /sys/fs/cgroup -mindepth 1 -type d \\( -path '*tameflare*' -o -path '*/agents*' \\) "
                    "2>/dev/null"),
              "");
    const std::string pins = quiet("find /sys/fs/bpf/tameflare -mindepth 1 2>/dev/null | head -n 20");
    std::cout << "[e2e] pinned after stop:\n" << pins << "\n";
    EXPECT_NE(pins.find("links"), std::string::npos) << "the BPF links are not pinned after a stop";
}

TEST_F(SystemdE2E, PurgeRemovesStateAndPins) {
    in("systemctl stop tameflared.service");
    const Result purge = in("dpkg --purge tameflare", 120s);
    EXPECT_EQ(purge.status, 0) << purge.out << purge.err;
    EXPECT_EQ(quiet("ls -d /var/lib/tameflare /sys/fs/bpf/tameflare /usr/sbin/tameflared "
                    "/usr/lib/systemd/system/tameflared.service 2>/dev/null"),
              "");
    EXPECT_EQ(quiet("systemctl is-enabled tameflared.service 2>&1 || true").find("enabled"), std::string::npos);
    EXPECT_NE(quiet("getent group tameflare-member"), "") << "the role groups stay after purge";
}

}  // namespace
}  // namespace tameflare::e2e
