#include "netns/filesystem.h"

#include "policy/glob.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <random>
#include <string_view>
#include <system_error>

namespace tameflare::netns {
namespace {

namespace fs = std::filesystem;
using policy::path_within;

// The paths `pattern` names: itself when it has no glob (whether it exists is
// asked later, in the agent's mount namespace), else each existing path whose
// components match, looked up under `lookup_root`. The first `literal`
// characters are never globs (a home directory's own '*').
std::vector<std::string> expand(const std::string& pattern, std::size_t literal, const std::string& lookup_root,
                                std::size_t& budget, bool& truncated) {
    if (!policy::has_glob_chars(std::string_view(pattern).substr(literal))) return {pattern};
    std::vector<std::string> current{pattern.substr(0, literal)};
    std::size_t at = literal;
    while (at < pattern.size()) {
        if (pattern[at] == '/') {
            ++at;
            continue;
        }
        const std::size_t end = std::min(pattern.find('/', at), pattern.size());
        const std::string component = pattern.substr(at, end - at);
        at = end;
        std::vector<std::string> next;
        for (const auto& base : current) {
            const std::string joined = base == "/" ? "" : base;
            if (!policy::has_glob_chars(component)) {
                next.push_back(joined + "/" + component);
                continue;
            }
            std::error_code error;
            std::vector<std::string> names;
            for (fs::directory_iterator it(lookup_root + joined + "/", error), stop; !error && it != stop;
                 it.increment(error)) {
                const std::string name = it->path().filename().string();
                if (policy::glob_match(component, name)) names.push_back(name);
            }
            std::sort(names.begin(), names.end());
            for (const auto& name : names) next.push_back(joined + "/" + name);
        }
        current = std::move(next);
        if (current.empty()) return {};
    }
    if (current.size() > budget) {
        current.resize(budget);
        truncated = true;
    }
    budget -= current.size();
    return current;
}

// Where code that runs later lives: a working directory here is never writable (a uid-0 agent could write it).
constexpr std::array<std::string_view, 12> kSystemDirectories{"/etc",
                                                              "/usr",
                                                              "/boot",
                                                              "/bin",
                                                              "/sbin",
                                                              "/lib",
                                                              "/lib32",
                                                              "/lib64",
                                                              "/libx32",
                                                              "/var/spool",
                                                              "/var/lib/systemd",
                                                              "/var/lib/dpkg"};

// 16 hex digits from the kernel's random source.
std::string unguessable() {
    std::random_device source;
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 16; ++i) out += kDigits[source() % 16];
    return out;
}

void add_unique(std::vector<std::string>& list, std::string path) {
    if (std::find(list.begin(), list.end(), path) == list.end()) list.push_back(std::move(path));
}

// Each entry of `entries` for each of `contexts`, expanded.
std::vector<std::string> resolve_list(const std::vector<std::string>& entries,
                                      const std::vector<policy::PathContext>& contexts, const std::string& lookup_root,
                                      const char* list_name, std::vector<std::string>& notes) {
    std::vector<std::string> out;
    std::size_t budget = kMaxGlobMatches;
    bool truncated = false;
    for (const auto& entry : entries) {
        for (const auto& context : contexts) {
            std::size_t literal = 0;
            const std::string pattern = policy::absolute_pattern(entry, context, &literal);
            for (auto& path : expand(pattern, literal, lookup_root, budget, truncated))
                add_unique(out, std::move(path));
        }
    }
    if (truncated) {
        notes.push_back(std::string("the ") + list_name + " list's globs matched more than " +
                        std::to_string(kMaxGlobMatches) + " paths; the rest are left out");
    }
    return out;
}

}  // namespace

FilesystemView resolve_filesystem(const policy::FilesystemRules& rules, const FilesystemInputs& inputs) {
    FilesystemView view;
    const policy::PathContext& main = inputs.paths;
    const std::string& root = inputs.lookup_root;
    if (rules.private_tmp) view.private_tmp = {"/tmp", "/var/tmp"};

    // The working directory (and what is relative to it) is writable unless it holds the home directory (then
    // every start-up file of the user's would be too, and most cannot be protected before they exist) or is the file
    // system's root. A gateway that names "~" itself has chosen so.
    std::vector<std::string> relative;
    std::vector<std::string> named;
    // An agent with no home of its own (a dynamic uid's is "/") has no '~' entries.
    const bool homeless = main.home.empty() || main.home == "/";
    for (const auto& entry : rules.write) {
        if (homeless && entry.starts_with("~")) continue;
        (entry.starts_with("/") || entry.starts_with("~") ? named : relative).push_back(entry);
    }
    std::vector<std::string> paths;
    for (auto& path : resolve_list(relative, {main}, root, "write", view.notes)) {
        const bool holds_home = !main.home.empty() && main.home != "/" && path_within(main.home, path);
        const auto system = std::find_if(kSystemDirectories.begin(), kSystemDirectories.end(),
                                         [&](std::string_view directory) { return path_within(path, directory); });
        if (path == "/" || holds_home || system != kSystemDirectories.end()) {
            const std::string what = path == "/"  ? "holds everything"
                                     : holds_home ? "holds the home directory"
                                                  : "is in " + std::string(*system);
            view.notes.push_back("the working directory " + path + " " + what +
                                 ": it stays read-only to the agent (launch it from a project directory)");
            continue;
        }
        paths.push_back(std::move(path));
    }
    for (auto& path : resolve_list(named, {main}, root, "write", view.notes)) add_unique(paths, std::move(path));
    for (auto& path : paths) {
        // A private /tmp replaces the host's: the entry means the agent's own, which is writable anyway.
        if (std::any_of(view.private_tmp.begin(), view.private_tmp.end(),
                        [&](const std::string& tmp) { return path == tmp; })) {
            continue;
        }
        view.write.push_back(std::move(path));
    }

    // Only what lies inside a write root needs protecting: the rest is read-only already.
    std::vector<std::string> protect;
    for (const auto& entry : rules.protect) {
        if (!(homeless && entry.starts_with("~"))) protect.push_back(entry);
    }
    for (auto& path : resolve_list(protect, {main}, root, "protect", view.notes)) {
        bool inside = false;
        for (const auto& write_root : view.write) {
            if (!path_within(path, write_root)) continue;
            inside = true;
            // Each directory between the write root and the protected path becomes a mount point, which cannot be
            // renamed or removed: `mv .git .git.old` and a fresh .git would leave hooks/ writable again.
            for (std::size_t at = path.find('/', write_root.size() + 1); at != std::string::npos;
                 at = path.find('/', at + 1)) {
                add_unique(view.pins, path.substr(0, at));
            }
        }
        if (!inside) continue;
        // A protected path that does not exist (yet) in an existing directory: watched instead.
        struct stat info {};
        const std::size_t slash = path.rfind('/');
        const std::string directory = slash == 0 ? "/" : path.substr(0, slash);
        if (::lstat((root + path).c_str(), &info) != 0 && errno == ENOENT &&
            ::stat((root + directory).c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
            view.absent.push_back({directory, path.substr(slash + 1)});
        }
        add_unique(view.protect, std::move(path));
    }
    std::sort(view.pins.begin(), view.pins.end(),
              [](const std::string& a, const std::string& b) { return a.size() < b.size(); });

    std::vector<policy::PathContext> homes;
    if (!homeless) homes.push_back(main);
    for (const auto& home : inputs.other_homes) {
        const bool known = std::any_of(homes.begin(), homes.end(),
                                       [&](const policy::PathContext& context) { return context.home == home; });
        if (!home.empty() && home != "/" && !known) homes.push_back(policy::PathContext{home, main.workdir});
    }
    view.hide = resolve_list(rules.hide, homes, root, "hide", view.notes);
    return view;
}

LandlockPolicy write_ruleset(const FilesystemView& view) {
    LandlockPolicy policy;
    policy.handled_fs = kFsWriteRights;
    for (const auto& path : view.write) policy.paths.push_back({path, kFsWriteRights});
    for (const auto& path : view.private_tmp) policy.paths.push_back({path, kFsWriteRights});
    // Terminals, /dev/null and friends: open for writing, truncate (`> /dev/null`), ioctl (a tty opened later).
    policy.paths.push_back({"/dev", kFsWriteFile | kFsTruncate | kFsIoctlDev});
    policy.paths.push_back({"/dev/shm", kFsWriteRights});  // POSIX shared memory and semaphores
    return policy;
}

ProtectedNameGuard::ProtectedNameGuard(const std::vector<FilesystemView::Absent>& absent,
                                       const std::string& lookup_root, std::string tag)
    : tag_(std::move(tag)) {
    if (absent.empty()) return;
    inotify_ = UniqueFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!inotify_) return;
    for (const auto& entry : absent) {
        const std::string path = lookup_root + entry.directory;
        UniqueFd directory(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!directory) continue;
        // By the directory's descriptor: the path may change under us, the inode does not.
        const std::string by_fd = "/proc/self/fd/" + std::to_string(directory.get());
        if (::inotify_add_watch(inotify_.get(), by_fd.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) continue;
        names_.push_back({entry.directory, std::move(directory), entry.name});
    }
    if (names_.empty()) inotify_.reset();
}

std::vector<std::string> ProtectedNameGuard::sweep() {
    std::array<char, 4096> events{};
    while (inotify_ && ::read(inotify_.get(), events.data(), events.size()) > 0) {
    }
    std::vector<std::string> moved;
    for (const auto& watched : names_) {
        struct stat info {};
        if (::fstatat(watched.fd.get(), watched.name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) continue;
        // A name the agent cannot guess: with a predictable one it could take every candidate first and keep its
        // file where it is.
        for (int attempt = 1; attempt <= 8; ++attempt) {
            const std::string aside = watched.name + ".tameflare-" + tag_ + "-" + unguessable();
            if (::renameat2(watched.fd.get(), watched.name.c_str(), watched.fd.get(), aside.c_str(),
                            RENAME_NOREPLACE) == 0) {
                moved.push_back(watched.directory + "/" + watched.name + " -> " + aside);
                break;
            }
            if (errno != EEXIST) break;
        }
    }
    return moved;
}

}  // namespace tameflare::netns
