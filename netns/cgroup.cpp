#include "netns/cgroup.h"

#include "common/text.h"
#include "netns/error.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>

namespace tameflare::netns {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using detail::fail;

constexpr std::string_view kDelegateHint =
    "tameflared needs write access to its cgroup subtree (run it as root, or with Delegate=yes in its unit)";

struct Cgroup2Mount {
    fs::path mount_point;
    std::string root;  // the cgroup the mount shows at its top, as in /proc/self/cgroup
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 3 < text.size()) {
            const std::string_view digits = text.substr(i + 1, 3);
            if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '7'; })) {
                out.push_back(static_cast<char>((digits[0] - '0') * 64 + (digits[1] - '0') * 8 + (digits[2] - '0')));
                i += 3;
                continue;
            }
        }
        out.push_back(text[i]);
    }
    return out;
}

// Each line of /proc/self/mountinfo:
// id parent major:minor root mount-point options [optional fields...] - fstype source super-options
struct MountLine {
    std::string fstype;
    std::string root;
    std::string mount_point;
    std::string options;
};

std::vector<MountLine> read_mountinfo() {
    std::ifstream in("/proc/self/mountinfo");
    if (!in) fail(errno, "cannot read /proc/self/mountinfo", "is /proc mounted?");
    std::vector<MountLine> mounts;
    std::string line;
    while (std::getline(in, line)) {
        const auto separator = line.find(" - ");
        if (separator == std::string::npos) continue;
        MountLine mount;
        std::istringstream tail(line.substr(separator + 3));
        tail >> mount.fstype;
        std::istringstream head(line.substr(0, separator));
        std::string id, parent, device;
        head >> id >> parent >> device >> mount.root >> mount.mount_point >> mount.options;
        mount.root = unescape_mountinfo(mount.root);
        mount.mount_point = unescape_mountinfo(mount.mount_point);
        mounts.push_back(std::move(mount));
    }
    return mounts;
}

std::optional<Cgroup2Mount> find_cgroup2_mount() {
    std::optional<Cgroup2Mount> found;
    for (auto& line : read_mountinfo()) {
        if (line.fstype != "cgroup2") continue;
        Cgroup2Mount mount{std::move(line.mount_point), std::move(line.root)};
        // Prefer a mount of the whole hierarchy over a bind mount of a subtree.
        if (mount.root == "/") return mount;
        if (!found) found = std::move(mount);
    }
    return found;
}

// The per-mount flags a bind remount must keep (mountinfo field 6).
unsigned long mount_flags(const std::string& options) {
    unsigned long flags = 0;
    std::istringstream in(options);
    for (std::string option; std::getline(in, option, ',');) {
        if (option == "ro") flags |= MS_RDONLY;
        if (option == "nosuid") flags |= MS_NOSUID;
        if (option == "nodev") flags |= MS_NODEV;
        if (option == "noexec") flags |= MS_NOEXEC;
        if (option == "noatime") flags |= MS_NOATIME;
        if (option == "nodiratime") flags |= MS_NODIRATIME;
        if (option == "relatime") flags |= MS_RELATIME;
    }
    return flags;
}

Cgroup2Mount require_cgroup2_mount() {
    auto mount = find_cgroup2_mount();
    if (!mount) {
        throw std::runtime_error(
            "no cgroup2 filesystem is mounted (none in /proc/self/mountinfo); mount one with "
            "`mount -t cgroup2 cgroup2 /sys/fs/cgroup` or boot with systemd.unified_cgroup_hierarchy=1");
    }
    return *mount;
}

// The "0::" line of a /proc/<pid>/cgroup file: the process's cgroup2 path, relative to our cgroup namespace.
std::optional<std::string> unified_line(const fs::path& file) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("0::", 0) == 0) return line.substr(3);
    }
    return std::nullopt;
}

std::string read_at(int dir_fd, const char* name, const fs::path& dir) {
    UniqueFd fd(::openat(dir_fd, name, O_RDONLY | O_CLOEXEC));
    if (!fd) fail(errno, "cannot open " + (dir / name).string());
    std::string text;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(errno, "cannot read " + (dir / name).string());
        if (n == 0) return text;
        text.append(buffer, static_cast<std::size_t>(n));
    }
}

bool events_say_populated(std::string_view events) {
    std::size_t at = 0;
    while (at < events.size()) {
        auto end = events.find('\n', at);
        if (end == std::string_view::npos) end = events.size();
        const auto line = events.substr(at, end - at);
        if (line.rfind("populated ", 0) == 0) return line.substr(10) != "0";
        at = end + 1;
    }
    return false;
}

void append_pids(std::string_view procs, std::vector<pid_t>& out) {
    const char* p = procs.data();
    const char* end = p + procs.size();
    while (p < end) {
        pid_t pid = 0;
        const auto [next, ec] = std::from_chars(p, end, pid);
        if (ec == std::errc{}) out.push_back(pid);
        p = next;
        while (p < end && (*p < '0' || *p > '9')) ++p;
    }
}

void require_cgroup2(int fd, const fs::path& dir) {
    struct statfs info {};
    if (::fstatfs(fd, &info) != 0) fail(errno, "cannot statfs " + dir.string());
    if (info.f_type != CGROUP2_SUPER_MAGIC) {
        std::string where;
        try {
            where = " (the cgroup2 mount is " + cgroup2_mount().string() + ")";
        } catch (const std::exception&) {
            where = " (no cgroup2 filesystem is mounted)";
        }
        throw std::runtime_error(dir.string() + " is not a cgroup2 directory" + where +
                                 "; point tameflared's cgroup root below the cgroup2 mount");
    }
}

bool valid_name(const std::string& name) {
    return is_name(name, 64, Letters::any_case, "._-") && name != "." && name != "..";
}

// The cgroup directory and every descendant, deepest first (so rmdir can go in order).
std::vector<fs::path> subtree_deepest_first(const fs::path& root) {
    std::vector<fs::path> dirs{root};
    std::error_code ec;
    for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
        if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path());
    }
    std::stable_sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
        return std::distance(a.begin(), a.end()) > std::distance(b.begin(), b.end());
    });
    return dirs;
}

int remaining_ms(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

// Waits for "populated 0" in cgroup.events; kernfs wakes pollers with POLLPRI on every change.
bool wait_unpopulated(int dir_fd, const fs::path& dir, Clock::time_point deadline) {
    UniqueFd events(::openat(dir_fd, "cgroup.events", O_RDONLY | O_CLOEXEC));
    if (!events) fail(errno, "cannot open " + (dir / "cgroup.events").string());
    for (;;) {
        char buffer[256];
        const ssize_t n = ::pread(events.get(), buffer, sizeof buffer - 1, 0);
        if (n < 0) fail(errno, "cannot read " + (dir / "cgroup.events").string());
        if (!events_say_populated(std::string_view(buffer, static_cast<std::size_t>(n)))) return true;
        const int wait = remaining_ms(deadline);
        if (wait == 0) return false;
        pollfd ready{events.get(), POLLPRI, 0};
        if (::poll(&ready, 1, wait) < 0 && errno != EINTR) fail(errno, "cannot poll " + dir.string());
    }
}

}  // namespace

fs::path cgroup2_mount() {
    return require_cgroup2_mount().mount_point;
}

std::vector<CgroupMount> cgroup_mounts() {
    std::vector<CgroupMount> mounts;
    for (const auto& line : read_mountinfo()) {
        if (line.fstype == "cgroup2" || line.fstype == "cgroup") {
            mounts.push_back({line.mount_point, mount_flags(line.options)});
        }
    }
    return mounts;
}

std::string process_cgroup(pid_t pid, int pidfd) {
    if (pid <= 0) return {};
    auto cgroup = unified_line("/proc/" + std::to_string(pid) + "/cgroup").value_or("");
    // Read first, checked after: a live pidfd proves the file was its process's.
    if (pidfd >= 0 && ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0) return {};
    return cgroup;
}

fs::path own_cgroup() {
    const auto mount = require_cgroup2_mount();
    const auto line = unified_line("/proc/self/cgroup");
    if (!line) {
        throw std::runtime_error("/proc/self/cgroup has no cgroup2 (\"0::\") line; the kernel needs cgroup2 support");
    }
    const fs::path own(*line);
    const fs::path relative = own.lexically_relative(mount.root);
    if (relative.empty() || *relative.begin() == "..") {
        throw std::runtime_error("this process's cgroup " + *line + " is not below the cgroup2 mount at " +
                                 mount.mount_point.string() + " (which shows " + mount.root +
                                 "); mount the whole cgroup2 hierarchy");
    }
    return relative == "." ? mount.mount_point : mount.mount_point / relative;
}

std::uint64_t cgroup_id(const fs::path& dir) {
    struct stat info {};
    if (::stat(dir.c_str(), &info) != 0) fail(errno, "cannot stat cgroup " + dir.string());
    return info.st_ino;
}

void ensure_cgroup(const fs::path& dir) {
    fs::path at;
    for (const auto& part : dir.lexically_normal()) {
        at /= part;
        if (part == "/" || part.empty()) continue;
        if (::mkdir(at.c_str(), 0755) == 0) continue;
        const int err = errno;
        struct stat info {};
        if (err == EEXIST && ::stat(at.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) continue;
        fail(err, "cannot create cgroup " + at.string(), err == EACCES || err == EPERM ? kDelegateHint : "");
    }
}

namespace {

bool delegated(const fs::path& dir) {
    for (const char* name : {"trusted.delegate", "user.delegate"}) {
        std::array<char, 8> value{};
        const auto size = ::getxattr(dir.c_str(), name, value.data(), value.size());
        if (size == 1 && value[0] == '1') return true;
    }
    return false;
}

}  // namespace

std::optional<fs::path> adopt_delegated_cgroup() {
    fs::path unit = own_cgroup();
    // Already in the leaf (the daemon moved itself, then re-executed).
    if (unit.filename() == "daemon" && delegated(unit.parent_path())) unit = unit.parent_path();
    if (!delegated(unit)) return std::nullopt;
    const fs::path leaf = unit / "daemon";
    ensure_cgroup(leaf);
    const std::string pid = std::to_string(::getpid());
    UniqueFd procs(::open((leaf / "cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs || ::write(procs.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
        fail(errno, "cannot move tameflared into " + leaf.string(), kDelegateHint);
    }
    return unit / "agents";
}

Cgroup Cgroup::create(const fs::path& parent, const std::string& name) {
    if (!valid_name(name)) {
        throw std::invalid_argument("invalid cgroup name \"" + name +
                                    "\": use 1 to 64 characters of A-Z a-z 0-9 . _ - (not \".\" or \"..\")");
    }
    {
        UniqueFd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!parent_fd) {
            fail(errno, "cannot open parent cgroup " + parent.string(), "create it first (ensure_cgroup)");
        }
        require_cgroup2(parent_fd.get(), parent);
    }
    const fs::path dir = parent / name;
    if (::mkdir(dir.c_str(), 0755) != 0) {
        const int err = errno;
        if (err == EEXIST) {
            fail(err, "cannot create cgroup " + dir.string(),
                 "a cgroup of that name is already there (remove it, or adopt it with Cgroup::open)");
        }
        fail(err, "cannot create cgroup " + dir.string(), err == EACCES || err == EPERM ? kDelegateHint : "");
    }
    return open(dir);
}

Cgroup Cgroup::open(const fs::path& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) fail(errno, "cannot open cgroup " + dir.string());
    require_cgroup2(fd.get(), dir);
    return {dir, std::move(fd)};
}

std::uint64_t Cgroup::id() const {
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) fail(errno, "cannot stat cgroup " + path_.string());
    return info.st_ino;
}

bool Cgroup::populated() const {
    return events_say_populated(read_at(fd_.get(), "cgroup.events", path_));
}

std::vector<pid_t> Cgroup::processes() const {
    std::vector<pid_t> pids;
    append_pids(read_at(fd_.get(), "cgroup.procs", path_), pids);
    for (const auto& dir : subtree_deepest_first(path_)) {
        if (dir == path_) continue;
        // A descendant may vanish while we walk: what it held is gone too.
        UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) continue;
        try {
            append_pids(read_at(fd.get(), "cgroup.procs", dir), pids);
        } catch (const std::system_error&) {
        }
    }
    std::sort(pids.begin(), pids.end());
    pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
    return pids;
}

void Cgroup::kill() const {
    UniqueFd control(::openat(fd_.get(), "cgroup.kill", O_WRONLY | O_CLOEXEC));
    if (!control && errno == ENOENT) {
        // Kernels before 5.14 have no cgroup.kill.
        if (!kill_each_process()) {
            throw std::runtime_error("cannot kill every process in cgroup " + path_.string() +
                                     ": processes kept appearing for 5 seconds");
        }
        return;
    }
    if (!control) fail(errno, "cannot open " + (path_ / "cgroup.kill").string(), kDelegateHint);
    if (::write(control.get(), "1", 1) != 1) fail(errno, "cannot write " + (path_ / "cgroup.kill").string());
}

bool Cgroup::kill_each_process(std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    const auto mount = require_cgroup2_mount();
    // Our cgroup as /proc/<pid>/cgroup names it.
    const std::string ours = (fs::path(mount.root) / path_.lexically_relative(mount.mount_point)).lexically_normal();
    const auto inside = [&ours](const std::string& cgroup) {
        return cgroup == ours || (cgroup.size() > ours.size() && cgroup.compare(0, ours.size(), ours) == 0 &&
                                  (ours.back() == '/' || cgroup[ours.size()] == '/'));
    };
    for (;;) {
        const auto pids = processes();
        if (pids.empty()) return true;
        for (const pid_t pid : pids) {
            // The pidfd pins the process; checking its cgroup after opening it rules out a recycled pid.
            UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
            if (!pidfd) continue;
            const auto cgroup = unified_line("/proc/" + std::to_string(pid) + "/cgroup");
            if (!cgroup || !inside(*cgroup)) continue;
            ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
        }
        if (remaining_ms(deadline) == 0) return processes().empty();
        // Give the killed ones a moment to exit before looking for new ones.
        wait_unpopulated(fd_.get(), path_, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    }
}

bool Cgroup::remove(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::error_code ec;
    if (!fs::exists(path_, ec)) return true;
    kill();
    if (!wait_unpopulated(fd_.get(), path_, deadline)) return false;
    for (;;) {
        bool busy = false;
        for (const auto& dir : subtree_deepest_first(path_)) {
            if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) continue;
            if (errno != EBUSY) fail(errno, "cannot remove cgroup " + dir.string(), kDelegateHint);
            busy = true;
            break;
        }
        if (!busy) return !fs::exists(path_, ec);
        // EBUSY: something was moved or forked in after the kill; kill again and retry while time is left.
        if (remaining_ms(deadline) == 0) return false;
        kill();
        wait_unpopulated(fd_.get(), path_, deadline);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace tameflare::netns
