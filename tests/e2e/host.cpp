#include "tests/e2e/host.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace tameflare::e2e {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The environment of a child: ours, with `extra` ("NAME=value") replacing or adding.
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
    std::vector<std::string> env;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        const std::string_view text(*entry);
        const auto name = text.substr(0, text.find('='));
        const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& e) {
            return std::string_view(e).substr(0, e.find('=')) == name;
        });
        if (!replaced) env.emplace_back(text);
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

int decode_status(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void append_available(int& fd, std::string& into) {
    char buffer[8192];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
        into.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fd);
        fd = -1;
    }
}

}  // namespace

Result run(const std::vector<std::string>& argv_in, Seconds deadline, const std::string& input,
           const std::vector<std::string>& extra_env) {
    Result result;
    const auto started = Clock::now();
    std::vector<std::string> argv = argv_in;
    std::vector<std::string> env = child_environment(extra_env);
    auto args = pointers(argv);
    auto envp = pointers(env);
    int in[2];
    int out[2];
    int err[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        result.err = "pipe failed";
        return result;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        result.err = "fork failed";
        return result;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execvpe(args[0], args.data(), envp.data());
        _exit(127);
    }
    setpgid(pid, pid);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    // Inputs are small (a secret, a script): they fit in the pipe.
    if (!input.empty() && ::write(in[1], input.data(), input.size()) < 0) result.err = "write to stdin failed\n";
    ::close(in[1]);
    int out_fd = out[0];
    int err_fd = err[0];
    fcntl(out_fd, F_SETFL, O_NONBLOCK);
    fcntl(err_fd, F_SETFL, O_NONBLOCK);
    const auto end = started + deadline;
    std::optional<int> status;
    std::optional<Clock::time_point> exited_at;
    while (out_fd >= 0 || err_fd >= 0 || !status) {
        if (!status) {
            int raw = 0;
            if (::waitpid(pid, &raw, WNOHANG) == pid) {
                status = decode_status(raw);
                exited_at = Clock::now();
            }
        }
        // A grandchild left in the background may hold the pipes open: read
        // what is there for a moment after the child ended, then stop.
        if (exited_at && Clock::now() - *exited_at > 300ms) break;
        if (!status && Clock::now() >= end) {
            ::kill(-pid, SIGKILL);
            int raw = 0;
            ::waitpid(pid, &raw, 0);
            status = decode_status(raw);
            exited_at = Clock::now();
            result.timed_out = true;
        }
        pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
        const int ready = ::poll(fds, 2, 50);
        if (ready > 0) {
            if (out_fd >= 0 && fds[0].revents != 0) append_available(out_fd, result.out);
            if (err_fd >= 0 && fds[1].revents != 0) append_available(err_fd, result.err);
        }
    }
    if (out_fd >= 0) ::close(out_fd);
    if (err_fd >= 0) ::close(err_fd);
    result.status = *status;
    result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    return result;
}

Background::Background(const std::vector<std::string>& argv_in, const fs::path& output,
                       const std::vector<std::string>& extra_env) {
    std::vector<std::string> argv = argv_in;
    std::vector<std::string> env = child_environment(extra_env);
    auto args = pointers(argv);
    auto envp = pointers(env);
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || null < 0) throw std::runtime_error("cannot open " + output.string());
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        setpgid(0, 0);
        dup2(null, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        execvpe(args[0], args.data(), envp.data());
        _exit(127);
    }
    setpgid(pid_, pid_);
    ::close(out);
    ::close(null);
}

Background::~Background() {
    if (pid_ > 0 && !status_) {
        kill_group(SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

std::optional<int> Background::poll() {
    if (status_) return status_;
    int raw = 0;
    if (::waitpid(pid_, &raw, WNOHANG) == pid_) status_ = decode_status(raw);
    return status_;
}

std::optional<int> Background::wait(Seconds deadline) {
    const auto end = Clock::now() + deadline;
    while (!poll() && Clock::now() < end) std::this_thread::sleep_for(50ms);
    return status_;
}

void Background::kill_group(int signal) const {
    if (pid_ > 0 && !status_) ::kill(-pid_, signal);
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const fs::path& path, const std::string& text, fs::perms mode) {
    fs::create_directories(path.parent_path());
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out) throw std::runtime_error("cannot write " + path.string());
    }
    fs::permissions(path, mode);
}

std::string trim(std::string text) {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    std::size_t start = 0;
    while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
    return text.substr(start);
}

std::string sha256_hex(const std::string& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
        out += kHex[digest[i] >> 4];
        out += kHex[digest[i] & 15];
    }
    return out;
}

std::string shell_quote(const std::string& word) {
    std::string out = "'";
    for (const char c : word) {
        if (c == '\'') {
            out += "'\\''";
        } else {
            out += c;
        }
    }
    return out + "'";
}

fs::path cgroup2_mount() {
    std::ifstream mountinfo("/proc/self/mountinfo");
    std::string line;
    while (std::getline(mountinfo, line)) {
        // ... mount-point ... - fstype source options
        const auto dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        std::istringstream tail(line.substr(dash + 3));
        std::string fstype;
        tail >> fstype;
        if (fstype != "cgroup2") continue;
        std::istringstream head(line.substr(0, dash));
        std::string id, parent, devices, root, mount_point;
        head >> id >> parent >> devices >> root >> mount_point;
        return mount_point;
    }
    return {};
}

std::string host_unsupported_reason() {
    if (::geteuid() != 0) return "needs root (debootstrap, systemd-nspawn, BPF)";
    if (cgroup2_mount().empty()) return "the kernel has no cgroup2 mounted (BPF cgroup hooks need it)";
    std::error_code ec;
    if (!fs::exists("/sys/kernel/btf/vmlinux", ec)) return "the kernel has no BTF (/sys/kernel/btf/vmlinux)";
    if (!fs::exists("/sys/fs/bpf", ec)) return "the kernel has no bpffs (/sys/fs/bpf)";
    return "";
}

std::optional<Mirror> find_mirror(const std::string& suite) {
    const Result targets = run({"apt-get", "indextargets", "--format",
                                "$(IDENTIFIER)\t$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)\t$(ORIGIN)\t$(CODENAME)"});
    if (targets.status != 0) return std::nullopt;
    std::optional<std::string> exact;
    std::optional<std::string> any_debian;
    std::istringstream lines(targets.out);
    std::string line;
    while (std::getline(lines, line)) {
        std::vector<std::string> fields;
        std::istringstream split(line);
        std::string field;
        while (std::getline(split, field, '\t')) fields.push_back(field);
        fields.resize(6);
        const auto& [identifier, uri, release, component, origin, codename] =
            std::tie(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]);
        if (identifier != "Packages" || component != "main" || uri.rfind("http", 0) != 0) continue;
        if (release.find('-') != std::string::npos) continue;  // -security, -updates, -backports
        if (origin != "Debian" && !origin.empty()) continue;
        if ((release == suite || codename == suite) && !exact) exact = uri;
        if (origin == "Debian" && !any_debian) any_debian = uri;
    }
    auto uri = exact ? exact : any_debian;
    if (!uri) return std::nullopt;
    if (uri->back() != '/') *uri += '/';
    Mirror mirror{*uri, ""};
    // debootstrap does not read apt's configuration: hand it apt's proxy.
    const Result proxy = run({"apt-config", "shell", "PROXY", "Acquire::http::Proxy"});
    if (const auto quote = proxy.out.find('\''); quote != std::string::npos) {
        const auto end = proxy.out.find('\'', quote + 1);
        mirror.http_proxy = proxy.out.substr(quote + 1, end - quote - 1);
        if (mirror.http_proxy == "DIRECT") mirror.http_proxy.clear();
    }
    return mirror;
}

bool apt_reaches(const Mirror& mirror, const std::string& suite, std::string& error) {
    char pattern[] = "/tmp/tf-e2e-inrelease-XXXXXX";
    const int fd = mkstemp(pattern);
    if (fd >= 0) ::close(fd);
    ::unlink(pattern);
    const Result fetch =
        run({"/usr/lib/apt/apt-helper", "download-file", mirror.uri + "dists/" + suite + "/InRelease", pattern}, 90s);
    ::unlink(pattern);
    if (fetch.status == 0) return true;
    error = trim(fetch.out + fetch.err) + (fetch.timed_out ? " (timed out after 90 s)" : "");
    return false;
}

std::optional<fs::path> RootCache::get(std::string& log, std::string& skip) {
    std::vector<std::string> sorted = packages;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::string recipe = "tameflare-e2e root v1|" + suite + "|minbase|";
    std::string include;
    for (const auto& p : sorted) {
        recipe += p + ",";
        include += (include.empty() ? "" : ",") + p;
    }
    const Result arch = run({"dpkg", "--print-architecture"});
    recipe += "|" + trim(arch.out);
    const std::string name = suite + "-" + sha256_hex(recipe).substr(0, 16);
    const fs::path root = cache_dir / name;
    const fs::path marker = root / ".tameflare-e2e-complete";
    std::error_code ec;
    if (fs::exists(marker, ec)) {
        log += "root cache hit: " + root.string() + "\n";
        return root;
    }
    log += "root cache miss: building " + root.string() + "\n";
    const auto mirror = find_mirror(suite);
    if (!mirror) {
        log += "no Debian mirror for " + suite + " in apt's sources (apt-get indextargets)\n";
        return std::nullopt;
    }
    log += "mirror (from apt's sources): " + mirror->uri +
           (mirror->http_proxy.empty() ? "" : " via " + mirror->http_proxy) + "\n";
    if (std::string error; !apt_reaches(*mirror, suite, error)) {
        skip = "apt itself cannot reach the Debian mirror " + mirror->uri + " (" + error + "), so no " + suite +
               " root can be built for the end-to-end test";
        return std::nullopt;
    }
    fs::create_directories(cache_dir / "debs");
    std::string pattern = (cache_dir / (".tmp-" + name + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) {
        log += "mkdtemp failed: " + std::string(std::strerror(errno)) + "\n";
        return std::nullopt;
    }
    const fs::path building = pattern;
    fs::permissions(building, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    std::vector<std::string> env;
    if (!mirror->http_proxy.empty()) env.push_back("http_proxy=" + mirror->http_proxy);
    const Result bootstrap =
        run({"debootstrap", "--variant=minbase", "--include=" + include, "--cache-dir=" + (cache_dir / "debs").string(),
             suite, building.string(), mirror->uri},
            900s, "", env);
    log += "debootstrap: exit " + std::to_string(bootstrap.status) + " in " + std::to_string(int(bootstrap.seconds)) +
           " s\n";
    if (bootstrap.status != 0) {
        const std::string out = bootstrap.out + bootstrap.err;
        log += out.substr(out.size() > 6000 ? out.size() - 6000 : 0);
        std::string debootstrap_log = read_file(building / "debootstrap" / "debootstrap.log");
        log += "\n--- debootstrap.log (tail) ---\n" +
               debootstrap_log.substr(debootstrap_log.size() > 6000 ? debootstrap_log.size() - 6000 : 0);
        fs::remove_all(building, ec);
        return std::nullopt;
    }
    // Smaller and offline: no package lists or archives in the image.
    run({"chroot", building.string(), "apt-get", "clean"}, 60s);
    write_file(building / ".tameflare-e2e-complete", recipe + "\n", fs::perms::owner_read | fs::perms::owner_write);
    if (::rename(building.c_str(), root.c_str()) != 0) {
        // Another run finished the same root first: use that one.
        log += "another run built " + root.string() + " meanwhile; using it\n";
        fs::remove_all(building, ec);
    }
    // Other recipes' roots and temporary roots of dead runs (over 2 hours old).
    for (const auto& entry : fs::directory_iterator(cache_dir, ec)) {
        const std::string entry_name = entry.path().filename().string();
        const bool other_root = entry_name.rfind(suite + "-", 0) == 0 && entry_name != name;
        bool stale_tmp = false;
        if (entry_name.rfind(".tmp-", 0) == 0) {
            struct stat st {};
            stale_tmp = ::stat(entry.path().c_str(), &st) == 0 && ::time(nullptr) - st.st_mtime > 7200;
        }
        if (other_root || stale_tmp) {
            log += "removing " + entry.path().string() + "\n";
            fs::remove_all(entry.path(), ec);
        }
    }
    return root;
}

Container::Container(Options options) : options_(std::move(options)) {}

Container::~Container() {
    if (nspawn_) stop(30s);
}

namespace {

// PPid and the last NSpid entry of a process (nullopt when it is gone).
std::optional<std::pair<pid_t, pid_t>> parent_and_inner_pid(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    if (!status) return std::nullopt;
    std::string line;
    pid_t ppid = -1;
    pid_t inner = -1;
    while (std::getline(status, line)) {
        if (line.rfind("PPid:", 0) == 0) ppid = std::stoi(line.substr(5));
        if (line.rfind("NSpid:", 0) == 0) {
            std::istringstream values(line.substr(6));
            pid_t value = 0;
            while (values >> value) inner = value;
        }
    }
    return std::make_pair(ppid, inner);
}

bool descends_from(pid_t pid, pid_t ancestor) {
    for (int depth = 0; depth < 4 && pid > 1; ++depth) {
        const auto info = parent_and_inner_pid(pid);
        if (!info) return false;
        if (info->first == ancestor) return true;
        pid = info->first;
    }
    return false;
}

}  // namespace

bool Container::start(std::string& error, Seconds deadline) {
    std::vector<std::string> argv{"systemd-nspawn",
                                  "--register=no",
                                  "--keep-unit",
                                  "--boot",
                                  "--directory=" + options_.root.string(),
                                  "--machine=" + options_.machine,
                                  "--console=read-only",
                                  "--link-journal=no",
                                  "--resolv-conf=off",
                                  "--timezone=off"};
    argv.insert(argv.end(), options_.nspawn_args.begin(), options_.nspawn_args.end());
    if (!options_.bpffs_dir.empty()) {
        fs::create_directories(options_.bpffs_dir);
        argv.push_back("--bind=" + options_.bpffs_dir.string() + ":/sys/fs/bpf");
        std::vector<std::string> wrapper{"unshare",
                                         "--mount",
                                         "--propagation",
                                         "private",
                                         "--",
                                         "/bin/sh",
                                         "-c",
                                         R"(mount -t bpf bpf "$0" && exec "$@")",
                                         options_.bpffs_dir.string()};
        argv.insert(argv.begin(), wrapper.begin(), wrapper.end());
    }
    std::cout << "[e2e] " << [&] {
        std::string line;
        for (const auto& a : argv) line += a + " ";
        return line;
    }() << "\n";
    // The container's systemd gets the unified cgroup hierarchy even on a
    // hybrid host (cgroup2 beside v1 controllers); BPF cgroup hooks need it.
    nspawn_.emplace(argv, options_.console_log, std::vector<std::string>{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1"});
    const auto end = Clock::now() + deadline;
    while (Clock::now() < end) {
        if (const auto status = nspawn_->poll()) {
            error = "systemd-nspawn exited with " + std::to_string(*status) + ":\n" + read_file(options_.console_log);
            return false;
        }
        DIR* proc = ::opendir("/proc");
        while (dirent* entry = proc ? ::readdir(proc) : nullptr) {
            const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
            if (pid <= 0) continue;
            const auto info = parent_and_inner_pid(pid);
            if (info && info->second == 1 && pid != 1 && descends_from(pid, nspawn_->pid())) leader_ = pid;
        }
        if (proc) ::closedir(proc);
        if (leader_ > 0) return true;
        std::this_thread::sleep_for(100ms);
    }
    error = "the container's PID 1 did not appear within the deadline:\n" + read_file(options_.console_log);
    return false;
}

std::vector<std::string> Container::sh_argv(const std::string& script) const {
    return {"nsenter",
            "--target",
            std::to_string(leader_),
            "--all",
            "--root",
            "--wd",
            "--",
            "/usr/bin/env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
            "TERM=dumb",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            "/bin/sh",
            "-c",
            script};
}

Result Container::sh(const std::string& script, Seconds deadline, const std::string& input) const {
    return run(sh_argv(script), deadline, input);
}

std::string Container::wait_booted(Seconds deadline) {
    const auto end = Clock::now() + deadline;
    std::string last;
    while (Clock::now() < end) {
        const auto left = std::chrono::duration_cast<Seconds>(end - Clock::now());
        const Result state = sh("systemctl is-system-running --wait", std::max<Seconds>(left, 1s));
        last = trim(state.out);
        // Before systemd is up nsenter or systemctl fail at once: try again.
        if (last == "running" || last == "degraded" || last == "maintenance" || last == "stopping") return last;
        if (nspawn_ && nspawn_->poll()) return "nspawn exited";
        std::this_thread::sleep_for(250ms);
    }
    return "timeout (last answer: " + last + ")";
}

std::string Container::stop(Seconds deadline) {
    if (!nspawn_) return "not started";
    std::string how;
    if (nspawn_->poll()) {
        how = "had already exited";
    } else {
        if (leader_ > 0) ::kill(leader_, SIGRTMIN + 4);  // systemd: poweroff
        if (nspawn_->wait(deadline)) {
            how = "powered off";
        } else {
            how = "did not power off within the deadline: killed";
            if (leader_ > 0) ::kill(leader_, SIGKILL);  // PID 1 of the namespace: everything in it dies
            nspawn_->kill_group(SIGKILL);
            nspawn_->wait(10s);
        }
    }
    nspawn_.reset();
    leader_ = -1;
    remove_nspawn_leftovers(options_.machine);
    return how;
}

void remove_nspawn_leftovers(const std::string& machine) {
    std::error_code ignored;
    fs::remove(fs::path("/run/systemd/nspawn/propagate") / machine, ignored);  // empty once nspawn is gone
}

}  // namespace tameflare::e2e
