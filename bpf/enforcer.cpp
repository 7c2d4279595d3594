#include "bpf/enforcer.h"

#include "bpf/tameflare.h"
#include "daemon/unique_fd.h"
#include "tameflare.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
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

// Every program with its name in the pin directory.
std::vector<std::pair<std::string, bpf_program*>> programs(tameflare_bpf& skeleton) {
    auto& p = skeleton.progs;
    return {
        {"connect4", p.tf_connect4},         {"connect6", p.tf_connect6},         {"sendmsg4", p.tf_sendmsg4},
        {"sendmsg6", p.tf_sendmsg6},         {"recvmsg4", p.tf_recvmsg4},         {"recvmsg6", p.tf_recvmsg6},
        {"getpeername4", p.tf_getpeername4}, {"getpeername6", p.tf_getpeername6}, {"sock_create", p.tf_sock_create},
        {"sockops", p.tf_sockops},
    };
}

proxy::Endpoint to_endpoint(const tf_addr& addr, std::uint16_t port, bool v4) {
    proxy::Endpoint endpoint;
    endpoint.port = port;
    endpoint.address.v4 = v4;
    if (v4) {
        std::memcpy(endpoint.address.bytes.data(), &addr.bytes[12], 4);
    } else {
        std::memcpy(endpoint.address.bytes.data(), addr.bytes, 16);
    }
    return endpoint;
}

tf_addr to_addr(const proxy::IpAddress& address) {
    tf_addr out{};
    if (address.v4) {
        out.bytes[10] = 0xff;
        out.bytes[11] = 0xff;
        std::memcpy(&out.bytes[12], address.bytes.data(), 4);
    } else {
        std::memcpy(out.bytes, address.bytes.data(), 16);
    }
    return out;
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

    void load() {
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
                           skeleton->maps.tf_counters};
        for (bpf_map* map : maps) {
            const fs::path pin = maps_dir() / bpf_map__name(map);
            if (bpf_map__set_pin_path(map, pin.c_str()) != 0)
                fail("cannot set the pin path " + pin.string(), errno, "");
        }
        if (const int error = tameflare_bpf__load(skeleton.get()); error != 0) {
            fail("cannot load the BPF programs into the kernel", -error,
                 "tameflared needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, a kernel with BTF (5.15 or later); "
                 "a pinned map of another layout is replaced by removing " +
                     maps_dir().string());
        }
    }

    // Re-adopts every pinned link and points it at this build's program;
    // forgets the links whose cgroups are gone.
    void update_pinned_links() {
        std::error_code error;
        if (!fs::exists(links_dir(), error)) return;
        std::vector<fs::path> emptied;
        for (const auto& group : fs::directory_iterator(links_dir(), error)) {
            bool severed = false;
            for (const auto& [name, program] : programs(*skeleton)) {
                const fs::path pin = group.path() / name;
                if (fs::exists(pin, error) && !adopt(pin, program)) severed = true;
            }
            if (severed) emptied.push_back(group.path());
        }
        for (const auto& dir : emptied) fs::remove(dir, error);  // only when nothing is left in it
    }
};

Enforcer::Enforcer(EnforcerOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    libbpf_set_print(nullptr);  // errors come back as errno and are reported once, by us
    ensure_bpffs(impl_->options.pin_dir);
    make_private_dir(impl_->options.pin_dir);
    impl_->load();
    impl_->update_pinned_links();
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
        LinkPtr link(bpf_program__attach_cgroup(program, cgroup_fd.get()));
        if (!link) {
            fail("cannot attach " + name + " to cgroup " + cgroup.string(), errno,
                 "the kernel needs cgroup BPF links (5.7 or later) and tameflared CAP_BPF and CAP_NET_ADMIN");
        }
        if (bpf_link__pin(link.get(), pin.c_str()) != 0) fail("cannot pin " + pin.string(), errno, "");
    }
}

void Enforcer::release(const fs::path& cgroup) {
    const fs::path dir = impl_->links_of(inode_of(cgroup));
    std::error_code error;
    for (const auto& [name, program] : programs(*impl_->skeleton)) {
        (void)program;
        const fs::path pin = dir / name;
        if (!fs::exists(pin, error)) continue;
        LinkPtr link(bpf_link__open(pin.c_str()));
        if (link) bpf_link__detach(link.get());
        ::unlink(pin.c_str());
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
    tf_origin_key key{};
    key.netns_cookie = netns_cookie;
    key.addr = to_addr(client.address);
    key.port = client.port;
    tf_origin value{};
    if (bpf_map__lookup_elem(impl_->skeleton->maps.tf_origins, &key, sizeof key, &value, sizeof value, 0) != 0) {
        return std::nullopt;
    }
    return Origin{to_endpoint(value.addr, value.port, value.family == AF_INET), value.agent};
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
