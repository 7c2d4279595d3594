#include "netns/seccomp.h"

#include "common/unique_fd.h"

#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace tameflare::netns {
namespace {

struct ContextDeleter {
    void operator()(void* context) const { seccomp_release(context); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

[[noreturn]] void fail(const std::string& what, int result) {
    throw std::runtime_error("cannot build the agents' seccomp filter: " + what + ": " + std::strerror(-result));
}

void check(int result, const std::string& what) {
    if (result < 0) fail(what, result);
}

}  // namespace

SeccompProgram agent_seccomp_program() {
    const Context context(seccomp_init(SCMP_ACT_ALLOW));
    if (!context) throw std::runtime_error("cannot build the agents' seccomp filter: seccomp_init failed");
    // An i386 or x32 system call from a 64-bit agent would otherwise pass by the native rules.
    if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
        for (const std::uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
            const int added = seccomp_arch_add(context.get(), arch);
            if (added != -EEXIST) check(added, "add an architecture");
        }
    }
    constexpr auto kNewUser = static_cast<scmp_datum_t>(CLONE_NEWUSER);
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, kNewUser, kNewUser)),
          "unshare(CLONE_NEWUSER)");
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, kNewUser, kNewUser)),
          "clone(CLONE_NEWUSER)");
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "clone3");
    // libseccomp 2.5 exports to a file descriptor only.
    const UniqueFd memory(::memfd_create("tameflare-seccomp", MFD_CLOEXEC));
    if (!memory) fail("memfd_create", -errno);
    check(seccomp_export_bpf(context.get(), memory.get()), "export");
    const off_t size = ::lseek(memory.get(), 0, SEEK_END);
    if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0) fail("an exported size", -EINVAL);
    SeccompProgram program;
    program.instructions.resize(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (::pread(memory.get(), program.instructions.data(), static_cast<std::size_t>(size), 0) != size) {
        fail("read the exported filter", -errno);
    }
    return program;
}

bool seccomp_available() {
    return ::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
}

int load_seccomp(const SeccompProgram& program) noexcept {
    if (program.instructions.empty()) return 0;
    sock_fprog filter{static_cast<unsigned short>(program.instructions.size()),
                      const_cast<sock_filter*>(program.instructions.data())};
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0) != 0) return errno;
    return 0;
}

}  // namespace tameflare::netns
