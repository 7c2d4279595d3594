// The data plane's confinement (daemon/dataplane/confine.h) applied to a probe
// process exactly as the data plane applies it: the probe drops to nobody
// with drop_privileges, enters confine_self's Landlock domain and seccomp
// allow-list, then tries what a data plane taken over by an agent would try,
// and what the proxy must still be able to do. Root only (the first step
// needs CAP_SETUID); skips with the reason otherwise.
#include "daemon/dataplane/confine.h"

#include "netns/landlock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>

namespace tameflare::dataplane {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// 0 when `call` succeeded, else its errno.
template <typename Call>
int outcome(Call&& call) {
    errno = 0;
    return call() < 0 ? errno : 0;
}

// What the probe found, one "name value" a line, in the child.
std::map<std::string, std::string> probe(int port) {
    std::map<std::string, std::string> out;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        const auto key = line.substr(0, colon);
        if (key == "Uid" || key == "Gid" || key == "Groups" || key.starts_with("Cap") || key == "NoNewPrivs" ||
            key == "Seccomp") {
            std::istringstream value(line.substr(colon + 1));
            std::string first;
            value >> first;
            out[key] = first;
        }
    }
    const auto record = [&](const std::string& name, int error) { out[name] = std::to_string(error); };
    // What it must not do.
    record("socket_packet", outcome([] { return ::socket(AF_PACKET, SOCK_RAW, 0); }));
    record("unshare", outcome([] { return ::unshare(CLONE_NEWNS); }));
    record("mount", outcome([] { return ::mount("none", "/mnt", "tmpfs", 0, nullptr); }));
    record("ptrace", outcome([] { return ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr); }));
    record("fork", outcome([] {
               const pid_t child = ::fork();
               if (child == 0) ::_exit(0);
               if (child > 0) ::waitpid(child, nullptr, 0);
               return child;
           }));
    record("execve", outcome([] {
               char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
               return ::execve("/bin/true", argv, nullptr);
           }));
    record("bpf_prog_load", outcome([] {
               bpf_attr attr{};
               return static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
           }));
    record("kill_parent", outcome([] { return ::kill(::getppid(), 0); }));
    record("setuid_root", outcome([] { return static_cast<int>(::syscall(SYS_setuid, 0)); }));
    record("bind", outcome([] {
               const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
               sockaddr_in any{};
               any.sin_family = AF_INET;
               any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
               const int r = ::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any);
               ::close(fd);
               return r;
           }));
    record("read_passwd", outcome([] { return ::open("/etc/passwd", O_RDONLY | O_CLOEXEC); }));
    record("write_tmp",
           outcome([] { return ::open("/tmp/tf-dataplane-probe", O_WRONLY | O_CREAT | O_CLOEXEC, 0600); }));
    // What it must still do.
    record("read_ssl", outcome([] { return ::open("/etc/ssl/openssl.cnf", O_RDONLY | O_CLOEXEC); }));
    record("connect", outcome([port] {
               const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
               if (fd < 0) return fd;
               sockaddr_in to{};
               to.sin_family = AF_INET;
               to.sin_port = htons(static_cast<std::uint16_t>(port));
               to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
               const int r = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);
               ::close(fd);
               return r;
           }));
    record("thread", outcome([] {
               int ran = -1;
               try {
                   std::thread([&ran] { ran = 0; }).join();
               } catch (const std::system_error& error) {
                   errno = error.code().value();
               }
               return ran;
           }));
    record("getrandom", outcome([] {
               char bytes[16];
               return static_cast<int>(::getrandom(bytes, sizeof bytes, 0));
           }));
    return out;
}

TEST(DataPlaneConfinement, AProbeUnderTheDataPlanesConfinementHasNoPrivilegeAndOnlyTheCallsItNeeds) {
    if (::geteuid() != 0) GTEST_SKIP() << "dropping to the data plane's user needs root";
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(listener, 4), 0);
    socklen_t length = sizeof address;
    ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
    const int port = ntohs(address.sin_port);

    int report[2];
    ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(report[0]);
        std::string text;
        const char* step = "";
        if (const int error = drop_privileges(kNobody, kNogroup, step); error != 0) {
            text = std::string("error drop_privileges ") + step + ": " + std::strerror(error) + "\n";
        } else {
            try {
                const auto confined = confine_self(Confinement{{"/etc/ssl", "/proc/self"}});
                text = "landlock " + std::to_string(confined.landlock_abi) + "\n";
                for (const auto& [name, value] : probe(port)) text += name + " " + value + "\n";
            } catch (const std::exception& refused) {
                text = std::string("error ") + refused.what() + "\n";
            }
        }
        (void)!::write(report[1], text.data(), text.size());
        ::_exit(0);
    }
    ::close(report[1]);
    std::string text;
    char buffer[4096];
    for (ssize_t n = 0; (n = ::read(report[0], buffer, sizeof buffer)) > 0;) text.append(buffer, n);
    ::close(report[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    ::close(listener);
    ASSERT_TRUE(WIFEXITED(status)) << "the probe was killed by signal " << WTERMSIG(status) << "\n" << text;

    std::map<std::string, std::string> found;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        const auto space = line.find(' ');
        found[line.substr(0, space)] = space == std::string::npos ? "" : line.substr(space + 1);
    }
    ASSERT_EQ(found.count("error"), 0u) << found["error"];
    const auto eq = [&](const std::string& name, int error) {
        EXPECT_EQ(found[name], std::to_string(error)) << name << " (" << std::strerror(error) << " expected)";
    };

    // No privilege: nobody, every capability set empty, no_new_privs, a seccomp filter.
    EXPECT_EQ(found["Uid"], std::to_string(kNobody));
    EXPECT_EQ(found["Gid"], std::to_string(kNogroup));
    EXPECT_EQ(found["Groups"], "");
    for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
        EXPECT_EQ(found[set], "0000000000000000") << set;
    }
    EXPECT_EQ(found["NoNewPrivs"], "1");
    EXPECT_EQ(found["Seccomp"], "2");

    // Refused by the allow-list.
    for (const char* name :
         {"socket_packet", "unshare", "mount", "ptrace", "fork", "execve", "bpf_prog_load", "setuid_root", "bind"}) {
        eq(name, EPERM);
    }
    // Another process may not even be signalled (seccomp: kill is not on the list).
    eq("kill_parent", EPERM);
    // Landlock: reads only beneath what it was given, writes nowhere.
    const int abi = std::stoi(found["landlock"]);
    if (abi > 0) {
        eq("read_passwd", EACCES);
        eq("write_tmp", EACCES);
    } else {
        std::cout << "this kernel has no Landlock (" << netns::landlock_missing_reason()
                  << "): the file rules were not checked\n";
    }
    // What the proxy needs still works.
    eq("read_ssl", 0);
    eq("connect", 0);
    eq("thread", 0);
    eq("getrandom", 0);
}

TEST(DataPlaneConfinement, TheAllowListNamesNoCallThatChangesPrivilegeOrMakesAProcess) {
    const std::set<std::string> forbidden{"execve",
                                          "execveat",
                                          "fork",
                                          "vfork",
                                          "ptrace",
                                          "mount",
                                          "unshare",
                                          "setns",
                                          "setuid",
                                          "setgid",
                                          "capset",
                                          "kill",
                                          "bind",
                                          "listen",
                                          "chroot",
                                          "pivot_root",
                                          "init_module",
                                          "finit_module",
                                          "kexec_load",
                                          "process_vm_readv",
                                          "process_vm_writev",
                                          "perf_event_open",
                                          "io_uring_setup",
                                          "userfaultfd",
                                          "keyctl",
                                          "add_key",
                                          "clone3",
                                          "personality"};
    for (const char* name : allowed_system_calls()) EXPECT_EQ(forbidden.count(name), 0u) << name;
}

}  // namespace
}  // namespace tameflare::dataplane
