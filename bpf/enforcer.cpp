#include "bpf/enforcer.h"

#include "bpf/tameflare.h"
#include "common/unique_fd.h"
#include "tameflare.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>
#include <system_error>

namespace tameflare::bpf {
namespace {

namespace fs = std::filesystem;

struct SkeletonDeleter {
    void operator()(tameflare_bpf* skeleton) const { tameflare_bpf__destroy(skeleton); }
};
struct LinkDeleter {
    // Closes our fd only: a pinned link stays attached.
    void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

std::string errno_text(int error) {
    return std::error_code(error, std::generic_category()).message();
}

[[noreturn]] void fail(const std::string& what, int error, const std::string& fix) {
    throw std::runtime_error(what + ": " + errno_text(error) + (fix.empty() ? "" : "; " + fix));
}

std::uint64_t inode_of(const fs::path& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) fail("cannot stat cgroup " + path.string(), errno, "");
    return info.st_ino;
}

bool is_bpffs(const fs::path& dir) {
    struct statfs info {};
    return ::statfs(dir.c_str(), &info) == 0 && info.f_type == BPF_FS_MAGIC;
}

// bpffs is where pins live; containers often lack it at /sys/fs/bpf.
void ensure_bpffs(const fs::path& pin_dir) {
    const fs::path mount_point = pin_dir.parent_path();
    if (is_bpffs(mount_point)) return;
    std::error_code ignored;
    fs::create_directories(mount_point, ignored);
    if (::mount("bpf", mount_point.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
        fail(
            "cannot mount bpffs at " + mount_point.string(), errno,
            "tameflared needs CAP_SYS_ADMIN to mount it, or mount it before: mount -t bpf bpf " + mount_point.string());
    }
}

void make_private_dir(const fs::path& dir) {
    std::error_code error;
    fs::create_directories(dir, error);
    if (error) fail("cannot create " + dir.string(), error.value(), "");
    ::chmod(dir.c_str(), 0700);
}

// Every program with its name in the pin directory, loaded or not.
std::vector<std::pair<std::string, bpf_program*>> all_programs(tameflare_bpf& skeleton) {
    auto& p = skeleton.progs;
    return {
        {"connect4", p.tf_connect4},
        {"connect6", p.tf_connect6},
        {"sendmsg4", p.tf_sendmsg4},
        {"sendmsg6", p.tf_sendmsg6},
        {"recvmsg4", p.tf_recvmsg4},
        {"recvmsg6", p.tf_recvmsg6},
        {"getpeername4", p.tf_getpeername4},
        {"getpeername6", p.tf_getpeername6},
        {"sock_create", p.tf_sock_create},
        {"sockops", p.tf_sockops},
        {"bind4", p.tf_bind4},
        {"bind6", p.tf_bind6},
        {"connect_unix", p.tf_connect_unix},
        {"sendmsg_unix", p.tf_sendmsg_unix},
        {"ingress", p.tf_ingress},
    };
}

// The programs this kernel loaded: the ones to attach.
std::vector<std::pair<std::string, bpf_program*>> programs(tameflare_bpf& skeleton) {
    auto all = all_programs(skeleton);
    std::erase_if(all, [](const auto& entry) { return bpf_program__fd(entry.second) < 0; });
    return all;
}

// Whether the kernel has the unix socket hooks, asked the only way that
// tells: loading a program for that attach type ("" when it has them).
std::string probe_unix_hooks() {
    const std::array<bpf_insn, 2> instructions{{
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},  // r0 = 1
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    }};
    bpf_prog_load_opts options{};
    options.sz = sizeof options;
    options.expected_attach_type = static_cast<bpf_attach_type>(TF_ATTACH_CGROUP_UNIX_CONNECT);
    const UniqueFd probe(bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "tf_probe_unix", "GPL", instructions.data(),
                                       instructions.size(), &options));
    if (probe) return {};
    return "the kernel has no cgroup connect_unix hook (loading one: " + errno_text(errno) +
           "); it arrived in Linux 6.7";
}

// A cgroup directory opened by its id (the name of its links' pin
// directory), through the cgroup2 file system's file handles.
UniqueFd open_cgroup(const fs::path& mount, std::uint64_t id) {
    if (mount.empty()) {
        fail("cannot open cgroup " + std::to_string(id) + " to add the links it lacks", EINVAL,
             "give EnforcerOptions::cgroup2_mount (netns::cgroup2_mount())");
    }
    const UniqueFd mount_fd(::open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!mount_fd) fail("cannot open the cgroup2 mount " + mount.string(), errno, "");
    constexpr int fileid_kernfs = 0xfe;  // a cgroup's handle is its 64-bit id
    std::vector<unsigned char> storage(sizeof(file_handle) + sizeof id);
    auto* handle = reinterpret_cast<file_handle*>(storage.data());
    handle->handle_bytes = sizeof id;
    handle->handle_type = fileid_kernfs;
    std::memcpy(storage.data() + sizeof(file_handle), &id, sizeof id);
    UniqueFd cgroup(::open_by_handle_at(mount_fd.get(), handle, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup) {
        fail("cannot open cgroup " + std::to_string(id) + " by its id", errno,
             "tameflared needs CAP_DAC_READ_SEARCH; or run tf enforce on that cgroup again");
    }
    return cgroup;
}

// Attaches `program` to the cgroup and pins the link at `pin`.
void attach(bpf_program* program, int cgroup_fd, const std::string& cgroup, const std::string& name,
            const fs::path& pin) {
    LinkPtr link(bpf_program__attach_cgroup(program, cgroup_fd));
    if (!link) {
        fail("cannot attach " + name + " to cgroup " + cgroup, errno,
             "the kernel needs cgroup BPF links (5.7 or later) and tameflared CAP_BPF and CAP_NET_ADMIN");
    }
    if (bpf_link__pin(link.get(), pin.c_str()) != 0) fail("cannot pin " + pin.string(), errno, "");
}

// Detaches the pinned link at `pin` and removes the pin.
void detach(const fs::path& pin) {
    LinkPtr link(bpf_link__open(pin.c_str()));
    if (link) bpf_link__detach(link.get());
    ::unlink(pin.c_str());
}

// Detaches and unpins the links in `dir` of programs this build did not
// load (the unix socket hooks, pinned by a daemon that had them): what
// hooks() reports is what is attached.
void detach_unloaded(tameflare_bpf& skeleton, const fs::path& dir) {
    std::error_code error;
    for (const auto& [name, program] : all_programs(skeleton)) {
        const fs::path pin = dir / name;
        if (bpf_program__fd(program) < 0 && fs::exists(pin, error)) detach(pin);
    }
}

// Unix socket allow-list entries (UnixSocketPolicy::allow), checked, and as
// keys of tf_unix_allow.
constexpr std::size_t unix_name_max = TF_UNIX_NAME_MAX - 1;  // room for the NUL, or for the abstract NUL
constexpr std::uint32_t unix_header_bits = 8 * (sizeof(tf_unix_key::agent) + sizeof(tf_unix_key::kind));

// `entry` as it can be shown: bytes other than printable ASCII as \xNN.
std::string printable(const std::string& entry) {
    std::string out;
    for (const char c : entry) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte < 0x7f) {
            out += c;
        } else {
            constexpr std::string_view hex = "0123456789abcdef";
            out += std::string("\\x") + hex[byte >> 4] + hex[byte & 0xf];
        }
    }
    return out;
}

[[noreturn]] void bad_unix_entry(const std::string& entry, const std::string& what, const std::string& fix) {
    throw std::invalid_argument("unix socket entry \"" + printable(entry) + "\" " + what + "; " + fix);
}

void check_unix_entry(const std::string& entry) {
    const std::string forms =
        "write an absolute path (\"/run/app.sock\"), a directory ending in '/' (\"/run/app/\") or an abstract "
        "name (\"@name\")";
    if (entry.empty()) bad_unix_entry(entry, "is empty", forms);
    if (entry.front() == '@') {
        if (entry.size() == 1) bad_unix_entry(entry, "names no abstract socket", forms);
        if (entry.size() - 1 > unix_name_max) {
            bad_unix_entry(entry, "is " + std::to_string(entry.size() - 1) + " bytes long",
                           "an abstract name has at most " + std::to_string(unix_name_max) + " bytes");
        }
        return;
    }
    if (entry.front() != '/') {
        bad_unix_entry(entry, "is a relative path",
                       "write it absolute: the filter cannot know the agent's working directory");
    }
    if (entry.find('\0') != std::string::npos) bad_unix_entry(entry, "holds a NUL byte", forms);
    if (entry.size() > unix_name_max) {
        bad_unix_entry(entry, "is " + std::to_string(entry.size()) + " bytes long",
                       "a unix socket path has at most " + std::to_string(unix_name_max) + " (sun_path)");
    }
    const std::string canonical =
        "write it without \"//\", \".\" or \"..\" components: the filter compares paths as written and refuses "
        "such addresses";
    if (entry.find("//") != std::string::npos) bad_unix_entry(entry, "has an empty (\"//\") component", canonical);
    std::string_view rest(entry);
    while (!rest.empty()) {
        rest.remove_prefix(1);  // the '/'
        const auto end = std::min(rest.find('/'), rest.size());
        const std::string_view component = rest.substr(0, end);
        if (component == "." || component == "..") {
            bad_unix_entry(entry, "has a \"" + std::string(component) + "\" component", canonical);
        }
        rest.remove_prefix(end);
    }
}

tf_unix_key unix_key_of(std::uint64_t agent, std::uint8_t kind) {
    tf_unix_key key{};
    const std::uint64_t big_endian = htobe64(agent);
    std::memcpy(key.agent, &big_endian, sizeof big_endian);
    key.kind = kind;
    key.prefixlen = unix_header_bits;
    return key;
}

// The key of a checked entry, and its value.
std::pair<tf_unix_key, std::uint32_t> unix_entry(std::uint64_t agent, const std::string& entry) {
    if (entry.front() == '@') {
        tf_unix_key key = unix_key_of(agent, TF_UNIX_ABSTRACT);
        const std::size_t length = entry.size() - 1;
        key.name[0] = static_cast<std::uint8_t>(length);
        std::memcpy(&key.name[1], entry.data() + 1, length);
        key.prefixlen += static_cast<std::uint32_t>(8 * (1 + length));
        return {key, TF_UNIX_ENTRY_EXACT};
    }
    tf_unix_key key = unix_key_of(agent, TF_UNIX_PATH);
    std::memcpy(key.name, entry.data(), entry.size());
    const bool directory = entry.back() == '/';
    // An exact path covers its terminating NUL (zero in key.name): longer paths do not match it.
    key.prefixlen += static_cast<std::uint32_t>(8 * (entry.size() + (directory ? 0 : 1)));
    return {key, directory ? TF_UNIX_ENTRY_DIRECTORY : TF_UNIX_ENTRY_EXACT};
}

bool same_key(const tf_unix_key& a, const tf_unix_key& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

// Points a pinned link at this build's program. false when the link was
// severed (its cgroup is gone: systemd removes a stopped unit's cgroup,
// with the agents/ subtree in it): the pin is removed, so that the cgroup
// of that name, if it is made again, gets a fresh link.
bool adopt(const fs::path& pin, bpf_program* program) {
    LinkPtr link(bpf_link__open(pin.c_str()));
    if (!link) fail("cannot open the pinned link " + pin.string(), errno, "");
    if (bpf_link__update_program(link.get(), program) == 0) return true;
    const int error = errno;
    if (error != ENOLINK) {
        fail("cannot update the pinned link " + pin.string(), error,
             "remove it (rm " + pin.string() + ") and restart tameflared");
    }
    ::unlink(pin.c_str());
    return false;
}

}  // namespace

struct Enforcer::Impl {
    EnforcerOptions options;
    std::unique_ptr<tameflare_bpf, SkeletonDeleter> skeleton;

    [[nodiscard]] fs::path maps_dir() const { return options.pin_dir / ("maps-v" + std::to_string(TF_MAPS_VERSION)); }
    [[nodiscard]] fs::path links_dir() const { return options.pin_dir / "links"; }
    [[nodiscard]] fs::path links_of(std::uint64_t cgroup) const { return links_dir() / std::to_string(cgroup); }

    bool unix_hooks = false;
    std::string unix_missing;

    // Opens the programs, with or without the unix socket hooks, and loads
    // them, re-using the pinned maps.
    void open_and_load(bool with_unix) {
        skeleton.reset();
#ifndef __clang_analyzer__
        skeleton.reset(tameflare_bpf__open());
#else
        // The generated skeleton's error path hands its allocation to libbpf
        // (bpf_object__destroy_skeleton), which the analyzer cannot see: it
        // reports a leak in bpftool's code, or not, depending on its budget.
        skeleton.reset();
#endif
        if (!skeleton) fail("cannot open the BPF programs", errno, "");
        make_private_dir(maps_dir());
        bpf_map* maps[] = {skeleton->maps.tf_agents, skeleton->maps.tf_sk_origin, skeleton->maps.tf_origins,
                           skeleton->maps.tf_unix_allow, skeleton->maps.tf_counters};
        for (bpf_map* map : maps) {
            const fs::path pin = maps_dir() / bpf_map__name(map);
            if (bpf_map__set_pin_path(map, pin.c_str()) != 0)
                fail("cannot set the pin path " + pin.string(), errno, "");
        }
        // libbpf 1.1 does not know the unix sections' names: it opens them
        // without a type, which is set here.
        const std::pair<bpf_program*, int> unix_programs[] = {
            {skeleton->progs.tf_connect_unix, TF_ATTACH_CGROUP_UNIX_CONNECT},
            {skeleton->progs.tf_sendmsg_unix, TF_ATTACH_CGROUP_UNIX_SENDMSG},
        };
        for (const auto& [program, attach_type] : unix_programs) {
            if (!with_unix) {
                bpf_program__set_autoload(program, false);
                continue;
            }
            if (bpf_program__set_type(program, BPF_PROG_TYPE_CGROUP_SOCK_ADDR) != 0 ||
                bpf_program__set_expected_attach_type(program, static_cast<bpf_attach_type>(attach_type)) != 0) {
                fail("cannot set the type of " + std::string(bpf_program__name(program)), errno, "");
            }
        }
        if (const int error = tameflare_bpf__load(skeleton.get()); error != 0) {
            fail("cannot load the BPF programs into the kernel", -error,
                 "tameflared needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, a kernel with BTF (5.15 or later); "
                 "a pinned map of another layout is replaced by removing " +
                     maps_dir().string());
        }
    }

    void load() {
        unix_missing = options.unix_socket_hooks ? probe_unix_hooks() : "left out by the daemon's options";
        unix_hooks = unix_missing.empty();
        if (unix_hooks) {
            try {
                open_and_load(true);
                return;
            } catch (const std::runtime_error& error) {
                // A kernel with the hooks that refuses our programs for them
                // still gets the rest; hooks() says what is missing.
                unix_hooks = false;
                unix_missing = std::string("the kernel refused the unix socket programs: ") + error.what();
            }
        }
        open_and_load(false);
    }

    // Re-adopts every pinned link and points it at this build's program;
    // forgets the links whose cgroups are gone. A cgroup whose links were
    // pinned by an older build gets links for the programs it lacks.
    void update_pinned_links() {
        std::error_code error;
        if (!fs::exists(links_dir(), error)) return;
        std::vector<fs::path> emptied;
        for (const auto& group : fs::directory_iterator(links_dir(), error)) {
            bool severed = false;
            bool live = false;
            std::vector<std::pair<std::string, bpf_program*>> missing;
            for (const auto& [name, program] : programs(*skeleton)) {
                const fs::path pin = group.path() / name;
                if (!fs::exists(pin, error)) {
                    missing.emplace_back(name, program);
                } else if (adopt(pin, program)) {
                    live = true;
                } else {
                    severed = true;
                }
            }
            if (severed) {
                emptied.push_back(group.path());
                continue;
            }
            detach_unloaded(*skeleton, group.path());
            if (live && !missing.empty()) {
                const std::uint64_t id = std::stoull(group.path().filename().string());
                const UniqueFd cgroup = open_cgroup(options.cgroup2_mount, id);
                for (const auto& [name, program] : missing) {
                    attach(program, cgroup.get(), std::to_string(id), name, group.path() / name);
                }
            }
        }
        for (const auto& dir : emptied) fs::remove(dir, error);  // only when nothing is left in it
    }

    // The keys of tf_unix_allow that belong to registration `agent`.
    [[nodiscard]] std::vector<tf_unix_key> unix_keys(std::uint64_t agent) const {
        bpf_map* map = skeleton->maps.tf_unix_allow;
        const tf_unix_key mine = unix_key_of(agent, 0);
        std::vector<tf_unix_key> out;
        tf_unix_key key{};
        tf_unix_key next{};
        const tf_unix_key* previous = nullptr;
        // Bounded: a key removed under us restarts the walk from the first.
        for (int step = 0; step < 2 * TF_MAX_UNIX_RULES; ++step) {
            if (bpf_map__get_next_key(map, previous, &next, sizeof next) != 0) break;
            if (std::memcmp(next.agent, mine.agent, sizeof mine.agent) == 0) out.push_back(next);
            key = next;
            previous = &key;
        }
        return out;
    }

    void remove_unix_keys(const std::vector<tf_unix_key>& keys) const {
        for (const auto& key : keys) bpf_map__delete_elem(skeleton->maps.tf_unix_allow, &key, sizeof key, 0);
    }
};

Enforcer::Enforcer(EnforcerOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    libbpf_set_print(nullptr);  // errors come back as errno and are reported once, by us
    ensure_bpffs(impl_->options.pin_dir);
    make_private_dir(impl_->options.pin_dir);
    impl_->load();
    impl_->update_pinned_links();
    // Maps of an older layout: every pinned link now runs this build's programs, so nothing uses them but their
    // pins (their registrations are not carried over: agents of the older daemon are adopted without them).
    std::error_code error;
    for (int version = 1; version < TF_MAPS_VERSION; ++version) {
        fs::remove_all(impl_->options.pin_dir / ("maps-v" + std::to_string(version)), error);
    }
}

Enforcer::~Enforcer() = default;

void Enforcer::enforce(const fs::path& cgroup) {
    const std::uint64_t id = inode_of(cgroup);
    const fs::path dir = impl_->links_of(id);
    make_private_dir(dir);
    const UniqueFd cgroup_fd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup_fd) fail("cannot open cgroup " + cgroup.string(), errno, "");
    std::error_code error;
    for (const auto& [name, program] : programs(*impl_->skeleton)) {
        const fs::path pin = dir / name;
        if (fs::exists(pin, error) && adopt(pin, program)) continue;
        attach(program, cgroup_fd.get(), cgroup.string(), name, pin);
    }
    detach_unloaded(*impl_->skeleton, dir);
}

void Enforcer::release(const fs::path& cgroup) {
    const fs::path dir = impl_->links_of(inode_of(cgroup));
    std::error_code error;
    for (const auto& [name, program] : all_programs(*impl_->skeleton)) {
        (void)program;
        const fs::path pin = dir / name;
        if (fs::exists(pin, error)) detach(pin);
    }
    fs::remove(dir, error);
}

std::vector<std::uint64_t> Enforcer::enforced() const {
    std::vector<std::uint64_t> ids;
    std::error_code error;
    if (!fs::exists(impl_->links_dir(), error)) return ids;
    for (const auto& group : fs::directory_iterator(impl_->links_dir(), error)) {
        ids.push_back(std::stoull(group.path().filename().string()));
    }
    return ids;
}

void Enforcer::add_agent(std::uint64_t cgroup_id, const AgentRoute& route) {
    tf_agent value{};
    value.key = cgroup_id;
    value.proxy_ip4 = htonl(route.proxy_ip4);
    value.proxy_port = route.proxy_port;
    value.dns_udp_port = route.dns_udp_port;
    value.dns_tcp_port = route.dns_tcp_port;
    if (bpf_map__update_elem(impl_->skeleton->maps.tf_agents, &cgroup_id, sizeof cgroup_id, &value, sizeof value,
                             BPF_ANY) != 0) {
        fail("cannot register cgroup " + std::to_string(cgroup_id), errno,
             "at most " + std::to_string(TF_MAX_AGENTS) + " agents run at once");
    }
}

void Enforcer::remove_agent(std::uint64_t cgroup_id) {
    bpf_map__delete_elem(impl_->skeleton->maps.tf_agents, &cgroup_id, sizeof cgroup_id, 0);
    impl_->remove_unix_keys(impl_->unix_keys(cgroup_id));
}

void Enforcer::set_unix_policy(std::uint64_t cgroup_id, const UnixSocketPolicy& policy) {
    for (const auto& entry : policy.allow) check_unix_entry(entry);
    std::vector<std::pair<tf_unix_key, std::uint32_t>> wanted;
    wanted.reserve(policy.allow.size() + 1);
    for (const auto& entry : policy.allow) wanted.push_back(unix_entry(cgroup_id, entry));
    if (policy.any_abstract) wanted.emplace_back(unix_key_of(cgroup_id, TF_UNIX_ABSTRACT), TF_UNIX_ENTRY_ANY_ABSTRACT);

    // The new entries first, then the stale ones out: what both lists allow
    // stays allowed throughout.
    const std::vector<tf_unix_key> existing = impl_->unix_keys(cgroup_id);
    const auto in = [](const tf_unix_key& key, const auto& keys, auto project) {
        return std::any_of(keys.begin(), keys.end(), [&](const auto& other) { return same_key(key, project(other)); });
    };
    const auto itself = [](const tf_unix_key& key) -> const tf_unix_key& { return key; };
    const auto first = [](const std::pair<tf_unix_key, std::uint32_t>& entry) -> const tf_unix_key& {
        return entry.first;
    };
    bpf_map* map = impl_->skeleton->maps.tf_unix_allow;
    std::vector<tf_unix_key> added;
    for (const auto& [key, value] : wanted) {
        if (bpf_map__update_elem(map, &key, sizeof key, &value, sizeof value, BPF_ANY) != 0) {
            const int error = errno;
            impl_->remove_unix_keys(added);  // back to the list as it was
            fail("cannot set the unix socket policy of cgroup " + std::to_string(cgroup_id), error,
                 "at most " + std::to_string(TF_MAX_UNIX_RULES) + " unix socket entries exist for all agents together");
        }
        if (!in(key, existing, itself)) added.push_back(key);
    }
    std::vector<tf_unix_key> stale;
    for (const auto& key : existing) {
        if (!in(key, wanted, first)) stale.push_back(key);
    }
    impl_->remove_unix_keys(stale);
}

HookSupport Enforcer::hooks() const {
    return HookSupport{true, impl_->unix_hooks, impl_->unix_missing};
}

std::map<std::uint64_t, AgentRoute> Enforcer::agents() const {
    std::map<std::uint64_t, AgentRoute> out;
    bpf_map* map = impl_->skeleton->maps.tf_agents;
    std::uint64_t key = 0;
    std::uint64_t next = 0;
    const std::uint64_t* previous = nullptr;
    while (bpf_map__get_next_key(map, previous, &next, sizeof next) == 0) {
        tf_agent value{};
        if (bpf_map__lookup_elem(map, &next, sizeof next, &value, sizeof value, 0) == 0) {
            out[next] = AgentRoute{ntohl(value.proxy_ip4), value.proxy_port, value.dns_udp_port, value.dns_tcp_port};
        }
        key = next;
        previous = &key;
    }
    return out;
}

std::optional<Origin> Enforcer::origin(std::uint64_t netns_cookie, const proxy::Endpoint& client) const {
    return OriginMap::lookup(bpf_map__fd(impl_->skeleton->maps.tf_origins), netns_cookie, client);
}

UniqueFd Enforcer::origin_map_readonly() const {
    bpf_map_info info{};
    std::uint32_t length = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_map__fd(impl_->skeleton->maps.tf_origins), &info, &length) != 0) {
        throw std::runtime_error(std::string("cannot read the origins map's id: ") + std::strerror(errno));
    }
    bpf_get_fd_by_id_opts options{};
    options.sz = sizeof options;
    options.open_flags = BPF_F_RDONLY;
    UniqueFd out(bpf_map_get_fd_by_id_opts(info.id, &options));
    if (!out) {
        throw std::runtime_error(std::string("cannot open a read-only descriptor of the origins map: ") +
                                 std::strerror(errno));
    }
    return out;
}

Counters Enforcer::counters() const {
    const int cpus = libbpf_num_possible_cpus();
    std::array<std::uint64_t, TF_COUNTER_MAX> totals{};
    std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(cpus > 0 ? cpus : 1));
    for (std::uint32_t index = 0; index < TF_COUNTER_MAX; ++index) {
        if (bpf_map__lookup_elem(impl_->skeleton->maps.tf_counters, &index, sizeof index, per_cpu.data(),
                                 per_cpu.size() * sizeof(std::uint64_t), 0) != 0) {
            continue;
        }
        for (const std::uint64_t value : per_cpu) totals[index] += value;
    }
    Counters out;
    out.tcp_redirected = totals[TF_COUNT_TCP_REDIRECTED];
    out.dns_redirected = totals[TF_COUNT_DNS_REDIRECTED];
    out.refused_unregistered = totals[TF_COUNT_REFUSED_NO_AGENT];
    out.refused_udp = totals[TF_COUNT_REFUSED_UDP];
    out.refused_socket = totals[TF_COUNT_REFUSED_SOCKET];
    out.refused_type = totals[TF_COUNT_REFUSED_TYPE];
    out.origin_full = totals[TF_COUNT_ORIGIN_FULL];
    out.refused_bind = totals[TF_COUNT_REFUSED_BIND];
    out.refused_unix = totals[TF_COUNT_REFUSED_UNIX];
    out.refused_ingress = totals[TF_COUNT_REFUSED_INGRESS];
    return out;
}

const fs::path& Enforcer::pin_dir() const {
    return impl_->options.pin_dir;
}

std::string unsupported_reason() {
    std::error_code error;
    if (!fs::exists("/sys/kernel/btf/vmlinux", error)) {
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing; CONFIG_DEBUG_INFO_BTF=y is needed)";
    }
    std::ifstream mounts("/proc/self/mountinfo");
    std::string line;
    bool cgroup2 = false;
    while (std::getline(mounts, line)) {
        if (line.find(" - cgroup2 ") != std::string::npos) cgroup2 = true;
    }
    if (!cgroup2) return "no cgroup2 file system is mounted";
    if (::geteuid() != 0) return "enforcement needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)";
    return {};
}

}  // namespace tameflare::bpf
