#include "daemon/agents_internal.h"

namespace tameflare::daemon::agents_detail {

bool valid_name(const std::string& name) {
    return is_name(name, 48, Letters::lower, "-_") && name.front() != '-';
}

// The caller's cgroup; "" (taken as an agent's) when it cannot be known to
// be the caller's: it exited, or its pid now names another process.
std::string caller_cgroup(const Caller& peer) {
    return netns::process_cgroup(peer.pid, peer.pidfd());
}

bool is_within(const std::string& path, const std::string& root) {
    return path == root || (path.size() > root.size() && path.rfind(root, 0) == 0 && path[root.size()] == '/');
}

// Who an agent runs as (docs/enforcement.md, "Who").

// The groups of `have` that the gateway's keep_groups names; every other is dropped.
std::vector<gid_t> kept_groups(const std::vector<gid_t>& have, const std::vector<std::string>& keep) {
    std::vector<gid_t> out;
    for (const auto& name : keep) {
        const auto gid = group_id(name);
        if (gid && std::find(have.begin(), have.end(), *gid) != have.end() &&
            std::find(out.begin(), out.end(), *gid) == out.end()) {
            out.push_back(*gid);
        }
    }
    return out;
}

// The run_as user of a gateway: uid, gid, home and groups from the user database.
Identity named_user(const std::string& name, const std::vector<std::string>& keep, const std::string& gateway) {
    const auto entry = user_by_name(name);
    if (!entry) {
        throw LaunchError("gateway " + gateway + " runs root's agents as user \"" + name + "\", which does not exist",
                          "create the user (adduser --system " + name + ") or change run_as in the gateway's file");
    }
    Identity identity;
    identity.uid = entry->uid;
    identity.gid = entry->gid;
    identity.user = entry->name;
    identity.home = entry->home;
    identity.groups = kept_groups(user_groups(*entry), keep);
    return identity;
}

// A user's home directory in the user database; "" when it has none.
std::string passwd_home(uid_t uid) {
    const auto entry = user_by_id(uid);
    return entry ? entry->home : std::string();
}

// /proc/PID/<entry> of the process that asked for the launch, opened and then checked to belong to it still (its
// pidfd): a recycled pid cannot lend another process's namespace or root.
UniqueFd open_of_caller(const Caller& peer, const char* entry, int flags) {
    UniqueFd pidfd;
    int check = peer.pidfd();
    if (check < 0) {
        pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, peer.pid, 0)));
        check = pidfd.get();
    }
    UniqueFd fd(::open(("/proc/" + std::to_string(peer.pid) + "/" + entry).c_str(), flags));
    if (!fd || check < 0 || ::syscall(SYS_pidfd_send_signal, check, 0, nullptr, 0) != 0) {
        throw LaunchError("the process that asked for the launch is gone", "");
    }
    return fd;
}

// Where the launching user's root directory is, as a path the daemon can look up (globs of the filesystem
// section are expanded in their view): "" when their mount namespace is the daemon's. `root` keeps it open.
std::string caller_root(const Caller& peer, int caller_mounts, UniqueFd& root) {
    if (caller_mounts < 0) return {};
    root = open_of_caller(peer, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
    return "/proc/self/fd/" + std::to_string(root.get());
}

// The working directory tf run passed, as a path: its name is what the agent will be started in (and checked to be
// the same directory in the agent's view), and what relative filesystem entries are relative to.
std::string working_directory(int fd) {
    std::array<char, 4096> buffer{};
    const ssize_t length = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buffer.data(), buffer.size());
    std::string path(buffer.data(), length > 0 ? static_cast<std::size_t>(length) : 0);
    struct stat info {};
    if (length <= 0 || static_cast<std::size_t>(length) >= buffer.size() || !path.starts_with("/") ||
        ::fstat(fd, &info) != 0 || !S_ISDIR(info.st_mode) || info.st_nlink == 0) {
        throw LaunchError("the working directory has no path (was it removed?)", "cd into an existing directory");
    }
    return path;
}

// The uid ranges of /etc/subuid and /etc/subgid: a dynamic uid inside one would share its number with a user
// namespace's processes and files.
std::vector<std::pair<std::uint64_t, std::uint64_t>> subordinate_ranges() {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const char* file : {"/etc/subuid", "/etc/subgid"}) {
        std::ifstream in(file);
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            std::string owner;
            std::string start;
            std::string count;
            if (!std::getline(fields, owner, ':') || !std::getline(fields, start, ':') ||
                !std::getline(fields, count)) {
                continue;
            }
            try {
                const std::uint64_t first = std::stoull(start);
                ranges.emplace_back(first, first + std::stoull(count));
            } catch (const std::exception&) {
                // not a range: nothing to avoid
            }
        }
    }
    return ranges;
}

// The sockets no gateway may open to its agents: the daemon's own and the system bus. An entry that names one,
// or a directory holding one (also through a symbolic link, /var/run -> /run), is left out.
bool covers(const fs::path& entry, const std::vector<fs::path>& forbidden) {
    std::error_code error;
    const std::string text = entry.string();
    const bool directory = !text.empty() && text.back() == '/';
    const fs::path canonical = fs::weakly_canonical(entry, error);
    for (const auto& socket : forbidden) {
        const fs::path target = fs::weakly_canonical(socket, error);
        if (!directory) {
            if (canonical == target || entry == socket) return true;
            continue;
        }
        const std::string root = canonical.string() + (canonical.string().ends_with("/") ? "" : "/");
        if (target.string().rfind(root, 0) == 0 || socket.string().rfind(text, 0) == 0) return true;
    }
    return false;
}

bool stripped(const std::string& variable, const std::vector<std::string>& patterns) {
    const std::string name = variable.substr(0, variable.find('='));
    static constexpr std::array<std::string_view, 8> kProxyVariables{
        "http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"};
    if (std::find(kProxyVariables.begin(), kProxyVariables.end(), name) != kProxyVariables.end()) return true;
    if (std::find(kBundleVariables.begin(), kBundleVariables.end(), name) != kBundleVariables.end()) return true;
    if (name.rfind("TAMEFLARE_", 0) == 0) return true;
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& pattern) { return fnmatch(pattern.c_str(), name.c_str(), 0) == 0; });
}

std::string random_suffix() {
    static thread_local std::mt19937_64 generator{std::random_device{}()};
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 6; ++i) out += kDigits[generator() % 16];
    return out;
}

// The Java trust store beside the bundle (proxy/trust_store.h).
fs::path java_trust_store_for(const fs::path& bundle) {
    return bundle.parent_path() / "ca-trust.p12";
}

void write_bundle(const fs::path& file, const std::string& ca_pem) {
    std::string bundle;
    for (const auto& path : kBundlePaths) {
        std::ifstream in{std::string(path)};
        if (!in) continue;
        bundle.assign(std::istreambuf_iterator<char>(in), {});
        break;
    }
    if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
    bundle += ca_pem;
    std::error_code error;
    fs::create_directories(file.parent_path(), error);
    // Each file whole or not at all (readers of the old one keep it), world-readable.
    const AtomicFileOptions options{.mode = 0644, .take_over_temporary = true};
    write_file_atomically(file, bundle, options);
    write_file_atomically(java_trust_store_for(file), proxy::java_trust_store(bundle), options);
}

// The agents' /etc/resolv.conf: a loopback resolver, so no query is even
// addressed to the host's; the BPF programs take port 53 to the stub anyway.
void write_resolv_conf(const fs::path& file) {
    write_file_atomically(
        file, "# tameflared: every query goes to the agent's DNS stub\nnameserver 127.0.0.53\noptions edns0\n",
        {.mode = 0644, .take_over_temporary = true});
}

// The mount namespace of the process that asked for the launch, when it is
// not the daemon's (a unit with ProtectHome=, PrivateTmp=, ProtectSystem=
// narrows the daemon's view): the agent gets a private copy of it, and so
// sees the machine as the user who ran tf run does. Invalid when the two are
// the same. The namespace is read from /proc/PID and then checked to belong
// to the caller still (its pidfd), so a recycled pid cannot lend another's.
UniqueFd caller_mount_namespace(const Caller& peer) {
    struct stat own {};
    struct stat theirs {};
    if (::stat("/proc/self/ns/mnt", &own) != 0) return {};
    UniqueFd fd = open_of_caller(peer, "ns/mnt", O_RDONLY | O_CLOEXEC);
    if (::fstat(fd.get(), &theirs) != 0 || (own.st_dev == theirs.st_dev && own.st_ino == theirs.st_ino)) return {};
    return fd;
}

void reply(Descriptor& client, const json& message) {
    try {
        netns::send_message(client.native_handle(), message.dump());
    } catch (const std::exception&) {
        // tf run went away; its agent is ended when the read side sees it
    }
}

}  // namespace tameflare::daemon::agents_detail
