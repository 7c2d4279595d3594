// tf vault set | list | remove | rotate: the vault in the daemon's state
// directory, through the store. A value goes in on standard input only and
// never comes out: list shows names, connectors and masked hints.
#include "cli/commands.h"

#include "daemon/store/state_lock.h"
#include "daemon/store/vault_store.h"

#include <getopt.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tameflare::cli {

namespace {

namespace fs = std::filesystem;

// A credential is a token or a key, not a file.
constexpr std::size_t kMaxValue = std::size_t{64} * 1024;

struct Options {
    std::string state_dir;
    std::string config;
    std::string connector;
    bool connector_given = false;
    bool json = false;
};

enum OptionId { kConfig = 'c', kStateDir = 256, kConnector, kJson, kValue, kHelp };

const option kOptions[] = {
    {"config", required_argument, nullptr, kConfig},
    {"state-dir", required_argument, nullptr, kStateDir},
    {"connector", required_argument, nullptr, kConnector},
    {"json", no_argument, nullptr, kJson},
    // Only to refuse it with the reason: a value never comes from argv.
    {"value", optional_argument, nullptr, kValue},
    {"help", no_argument, nullptr, kHelp},
    {nullptr, 0, nullptr, 0},
};

constexpr const char* kUsage = R"(Usage: tf vault set NAME [--connector C]   store a credential read from standard input
       tf vault list [--json]               names, connectors, masked hints and times (never values)
       tf vault remove NAME                 delete a credential
       tf vault rotate                      re-encrypt every value with a new vault key

  --connector C     the connector whose requests get this credential (set)
  --json            a JSON array instead of the table (list)
  --state-dir DIR   the daemon's state directory (default: from the configuration)
  -c, --config FILE the daemon configuration (default /etc/tameflare/tameflared.json)

The value is read from standard input, never from the command line (arguments
are visible to every user in /proc and ps):
  printf '%s' "$TOKEN" | tf vault set github_token --connector github
  tf vault set github_token < token.txt
In a terminal, tf vault set prompts and does not echo what you type.

rotate refuses while tameflared runs: stop it, rotate, start it.
Exit status: 0 done, 1 failed (the message says why), 2 usage error or unreadable input.
)";

constexpr const char* kValueRefused =
    "the value is never taken from the command line: arguments are visible to every user in /proc/PID/cmdline "
    "and ps, and stay in shell history. Pipe it on standard input instead:\n"
    "  printf '%s' \"$TOKEN\" | tf vault set NAME\n"
    "  tf vault set NAME < token.txt\n"
    "or run tf vault set NAME in a terminal and type it (it is not echoed)\n";

// "tf uid:1000 pid:4242": who changed the vault, for the audit log.
std::string actor() {
    return "tf uid:" + std::to_string(::getuid()) + " pid:" + std::to_string(::getpid());
}

struct Parsed {
    int exit = -1;  // >= 0: stop with this status
    std::vector<std::string> positional;
};

// `args` starts at the sub-command ("set", "list", ...).
Parsed parse(std::span<char*> args, Options& options) {
    const std::string sub = args[0];
    optind = 1;
    opterr = 0;  // our messages: getopt's would echo "--value=SECRET"
    int c = 0;
    const int argc = static_cast<int>(args.size());
    while ((c = getopt_long(argc, args.data(), "c:", kOptions, nullptr)) != -1) {
        switch (c) {
            case kConfig: options.config = optarg; break;
            case kStateDir: options.state_dir = optarg; break;
            case kConnector:
                options.connector = optarg;
                options.connector_given = true;
                break;
            case kJson: options.json = true; break;
            case kValue: std::fprintf(stderr, "tf vault %s: %s", sub.c_str(), kValueRefused); return {kExitUsage, {}};
            case kHelp: std::fputs(kUsage, stdout); return {kExitOk, {}};
            default: {
                // Up to '=' only: whatever follows may be a secret.
                std::string option = optopt != 0 && optopt < kStateDir ? std::string("-") + static_cast<char>(optopt)
                                                                       : std::string(args[optind - 1]);
                option = option.substr(0, option.find('='));
                std::fprintf(stderr, "tf vault %s: unknown option or missing argument: %s\n\n%s", sub.c_str(),
                             option.c_str(), kUsage);
                return {kExitUsage, {}};
            }
        }
    }
    if (options.connector_given && sub != "set") {
        std::fprintf(stderr, "tf vault %s: --connector belongs to tf vault set\n", sub.c_str());
        return {kExitUsage, {}};
    }
    if (options.json && sub != "list") {
        std::fprintf(stderr, "tf vault %s: --json belongs to tf vault list\n", sub.c_str());
        return {kExitUsage, {}};
    }
    Parsed parsed;
    for (int i = optind; i < argc; ++i) parsed.positional.emplace_back(args[static_cast<std::size_t>(i)]);
    return parsed;
}

// Why `name` is not a credential name, or empty. Quotes only the offending
// character: a secret pasted where the name goes is not printed back.
std::string name_problem(const std::string& name) {
    if (store::Vault::valid_name(name)) return {};
    const std::string_view rule = "use 1 to 128 letters, digits, '_', '.' or '-' (github_token, openai.prod)";
    if (name.empty()) return "the name is empty; " + std::string(rule);
    if (name.size() > 128) return "the name is longer than 128 characters; " + std::string(rule);
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (!store::Vault::valid_name(std::string_view(&name[i], 1))) {
            const unsigned char c = static_cast<unsigned char>(name[i]);
            char shown[16];
            if (c >= 0x21 && c < 0x7f) {
                std::snprintf(shown, sizeof shown, "'%c'", c);
            } else {
                std::snprintf(shown, sizeof shown, "byte 0x%02x", c);
            }
            return "character " + std::to_string(i + 1) + " of the name (" + shown + ") is not allowed; " +
                   std::string(rule);
        }
    }
    return std::string(rule);
}

// ---------------------------------------------------------------------------
// Reading the value

// Wipes the value from memory when it goes, however the command ends.
class Secret {
public:
    Secret() = default;
    Secret(const Secret&) = delete;
    Secret& operator=(const Secret&) = delete;
    ~Secret() { OPENSSL_cleanse(text.data(), text.size()); }
    std::string text;
};

// Terminal echo off while the value is typed, back on however the prompt
// ends: on return, on an exception, and on the signals that end tf (then
// the signal is raised again with its default action).
class EchoOff {
public:
    explicit EchoOff(int fd) {
        if (::tcgetattr(fd, &saved_) != 0) return;
        fd_ = fd;
        saved_for_signal = saved_;
        fd_for_signal = fd;
        struct sigaction restore {};
        restore.sa_handler = on_signal;
        sigemptyset(&restore.sa_mask);
        for (std::size_t i = 0; i < kSignals.size(); ++i) {
            ::sigaction(kSignals[i], &restore, &previous_[i]);
            // A signal tf was started to ignore stays ignored.
            if (previous_[i].sa_handler == SIG_IGN) ::sigaction(kSignals[i], &previous_[i], nullptr);
        }
        termios quiet = saved_;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        quiet.c_lflag |= ECHONL;  // the Enter key still moves to the next line
        ::tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;
    ~EchoOff() {
        if (fd_ < 0) return;
        ::tcsetattr(fd_, TCSAFLUSH, &saved_);
        for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &previous_[i], nullptr);
        fd_for_signal = -1;
    }

private:
    static constexpr std::array<int, 4> kSignals = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    static inline termios saved_for_signal{};
    static inline volatile std::sig_atomic_t fd_for_signal = -1;

    static void on_signal(int number) {
        if (fd_for_signal >= 0) ::tcsetattr(fd_for_signal, TCSANOW, &saved_for_signal);
        ::signal(number, SIG_DFL);
        ::raise(number);
    }

    int fd_ = -1;
    termios saved_{};
    std::array<struct sigaction, kSignals.size()> previous_{};
};

// The value on standard input: everything up to end of file from a pipe or
// file, one line from a terminal; one trailing "\n" or "\r\n" is dropped.
// false after printing why.
bool read_value(const std::string& name, Secret& value) {
    const bool terminal = ::isatty(STDIN_FILENO) == 1;
    std::optional<EchoOff> echo_off;
    if (terminal) {
        std::fprintf(stderr, "Value for %s (not echoed): ", name.c_str());
        std::fflush(stderr);
        echo_off.emplace(STDIN_FILENO);
    }
    // One allocation, so no copy of the value is left behind by a resize.
    value.text.assign(kMaxValue + 1, '\0');
    std::size_t used = 0;
    while (used < value.text.size()) {
        const ssize_t n = ::read(STDIN_FILENO, value.text.data() + used, value.text.size() - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            std::fprintf(stderr, "tf vault set: cannot read the value from standard input: %s\n", std::strerror(errno));
            return false;
        }
        if (n == 0) break;
        used += static_cast<std::size_t>(n);
        if (terminal && value.text[used - 1] == '\n') break;
    }
    if (used > kMaxValue) {
        std::fputs(
            "tf vault set: the value on standard input is larger than 64 KiB; a credential is a token or a key, "
            "not a file: check what is piped in\n",
            stderr);
        return false;
    }
    std::fill(value.text.begin() + static_cast<std::ptrdiff_t>(used), value.text.end(), '\0');
    value.text.resize(used);
    if (value.text.ends_with("\r\n")) {
        value.text.resize(value.text.size() - 2);
    } else if (value.text.ends_with('\n')) {
        value.text.pop_back();
    }
    if (value.text.empty()) {
        std::fprintf(stderr,
                     "tf vault set: the value read from standard input is empty; nothing was stored. Pipe it in: "
                     "printf '%%s' \"$TOKEN\" | tf vault set %s\n",
                     name.c_str());
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------
// Output

// RFC 3339, UTC, to the second.
std::string rfc3339(store::Clock::time_point time) {
    const std::time_t seconds = store::Clock::to_time_t(time);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return text;
}

void print_table(const std::vector<store::VaultEntry>& entries) {
    struct Row {
        std::string name, connector, hint, updated, last_used;
    };
    std::vector<Row> rows;
    rows.push_back({"NAME", "CONNECTOR", "HINT", "UPDATED", "LAST_USED"});
    for (const auto& entry : entries) {
        rows.push_back({entry.name, entry.connector.empty() ? "-" : entry.connector, entry.hint, rfc3339(entry.updated),
                        entry.last_used ? rfc3339(*entry.last_used) : "-"});
    }
    std::size_t name = 0, connector = 0, hint = 0, updated = 0;
    for (const auto& row : rows) {
        name = std::max(name, row.name.size());
        connector = std::max(connector, row.connector.size());
        hint = std::max(hint, row.hint.size());
        updated = std::max(updated, row.updated.size());
    }
    for (const auto& row : rows) {
        std::printf("%-*s  %-*s  %-*s  %-*s  %s\n", static_cast<int>(name), row.name.c_str(),
                    static_cast<int>(connector), row.connector.c_str(), static_cast<int>(hint), row.hint.c_str(),
                    static_cast<int>(updated), row.updated.c_str(), row.last_used.c_str());
    }
}

void print_json(const std::vector<store::VaultEntry>& entries) {
    auto array = nlohmann::json::array();
    for (const auto& entry : entries) {
        array.push_back({{"name", entry.name},
                         {"connector", entry.connector},
                         {"hint", entry.hint},
                         {"created", rfc3339(entry.created)},
                         {"updated", rfc3339(entry.updated)},
                         {"last_used", entry.last_used ? nlohmann::json(rfc3339(*entry.last_used)) : nullptr}});
    }
    std::printf("%s\n", array.dump(2).c_str());
}

// ---------------------------------------------------------------------------
// The sub-commands

int set_command(const Options& options, const std::vector<std::string>& positional) {
    if (positional.empty()) {
        std::fputs("tf vault set: give the credential's NAME; the value comes on standard input\n\n", stderr);
        std::fputs(kUsage, stderr);
        return kExitUsage;
    }
    if (positional.size() > 1) {
        std::fprintf(stderr, "tf vault set: one argument, the NAME; %s", kValueRefused);
        return kExitUsage;
    }
    const std::string& name = positional[0];
    if (const auto problem = name_problem(name); !problem.empty()) {
        std::fprintf(stderr, "tf vault set: %s\n", problem.c_str());
        return kExitUsage;
    }
    const auto location = state_location(options.state_dir, options.config);
    if (!location) return kExitUsage;
    Secret value;
    if (!read_value(name, value)) return kExitUsage;

    std::error_code ec;
    if (!fs::exists(location->state_dir, ec)) {
        // What the daemon would create at its first start.
        fs::create_directories(location->state_dir);
        fs::permissions(location->state_dir, fs::perms::owner_all);
    }
    // Without the lock tameflared runs: it picked up any interrupted rotation
    // at its start, and a "<key>.new" now means a rotation under way.
    const auto lock = store::StateLock::try_acquire(location->state_dir);
    auto store = store::Store::open(store::StoreOptions{.database = location->database});
    store::Vault vault(*store, store::Vault::load_key(location->vault_key, *store,
                                                      lock ? store::KeyAccess::exclusive : store::KeyAccess::shared));
    vault.set(name, options.connector, value.text, actor());
    std::printf("stored %s (%s)%s%s\n", name.c_str(), vault::masked_hint(value.text).c_str(),
                options.connector.empty() ? "" : " for connector ", options.connector.c_str());
    return kExitOk;
}

int list_command(const Options& options, const std::vector<std::string>& positional) {
    if (!positional.empty()) {
        std::fputs("tf vault list: takes no arguments\n", stderr);
        return kExitUsage;
    }
    const auto location = state_location(options.state_dir, options.config);
    if (!location) return kExitUsage;
    // Read-only, without the key: listing never creates a database or a key.
    auto db = store::Database::open(location->database, store::Database::Mode::read_only);
    const auto entries = store::list_vault(db);
    if (options.json) {
        print_json(entries);
    } else {
        print_table(entries);
    }
    return kExitOk;
}

int remove_command(const Options& options, const std::vector<std::string>& positional) {
    if (positional.size() != 1) {
        std::fputs("tf vault remove: give one NAME (tf vault list shows them)\n", stderr);
        return kExitUsage;
    }
    const std::string& name = positional[0];
    if (const auto problem = name_problem(name); !problem.empty()) {
        std::fprintf(stderr, "tf vault remove: %s\n", problem.c_str());
        return kExitUsage;
    }
    const auto location = state_location(options.state_dir, options.config);
    if (!location) return kExitUsage;
    std::error_code ec;
    if (!fs::exists(location->database, ec)) {
        std::fprintf(stderr, "tf vault remove: no vault at %s; is the state directory right (--state-dir)?\n",
                     location->database.c_str());
        return kExitFailed;
    }
    auto store = store::Store::open(store::StoreOptions{.database = location->database});
    if (!store::remove_from_vault(*store, name, actor())) {
        std::fprintf(stderr, "tf vault remove: no credential named %s in %s; tf vault list shows the names\n",
                     name.c_str(), location->database.c_str());
        return kExitFailed;
    }
    std::printf("removed %s\n", name.c_str());
    return kExitOk;
}

int rotate_command(const Options& options, const std::vector<std::string>& positional) {
    if (!positional.empty()) {
        std::fputs("tf vault rotate: takes no arguments\n", stderr);
        return kExitUsage;
    }
    const auto location = state_location(options.state_dir, options.config);
    if (!location) return kExitUsage;
    std::error_code ec;
    if (!fs::exists(location->database, ec)) {
        std::fprintf(stderr, "tf vault rotate: no vault at %s; is the state directory right (--state-dir)?\n",
                     location->database.c_str());
        return kExitFailed;
    }
    const auto lock = store::StateLock::try_acquire(location->state_dir);
    if (!lock) {
        std::fprintf(stderr,
                     "tf vault rotate: tameflared is running (it holds %s); stop it first: the running daemon keeps "
                     "the current key\n",
                     store::StateLock::file(location->state_dir).c_str());
        return kExitFailed;
    }
    auto store = store::Store::open(store::StoreOptions{.database = location->database});
    store::Vault vault(*store, store::Vault::load_key(location->vault_key, *store, store::KeyAccess::exclusive));
    const std::string from = store::to_hex(vault.key().id());
    const std::size_t count = vault.rotate_key_file(location->vault_key, actor());
    std::printf("re-encrypted %zu value%s; the vault key is now %s (was %s), in %s\n", count, count == 1 ? "" : "s",
                store::to_hex(vault.key().id()).c_str(), from.c_str(), location->vault_key.c_str());
    return kExitOk;
}

}  // namespace

int vault_command(std::span<char*> args) {
    const std::string sub = args.size() > 1 ? args[1] : "";
    if (sub == "--help" || sub == "-h" || sub == "help") {
        std::fputs(kUsage, stdout);
        return kExitOk;
    }
    using Command = int (*)(const Options&, const std::vector<std::string>&);
    Command command = nullptr;
    if (sub == "set") command = set_command;
    if (sub == "list") command = list_command;
    if (sub == "remove") command = remove_command;
    if (sub == "rotate") command = rotate_command;
    if (command == nullptr) {
        if (sub.empty()) {
            std::fputs("tf vault: which sub-command?\n\n", stderr);
        } else {
            std::fprintf(stderr, "tf vault: unknown sub-command \"%s\"\n\n", sub.c_str());
        }
        std::fputs(kUsage, stderr);
        return kExitUsage;
    }
    Options options;
    const auto parsed = parse(args.subspan(1), options);
    if (parsed.exit >= 0) return parsed.exit;
    try {
        return command(options, parsed.positional);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tf vault %s: %s\n", sub.c_str(), error.what());
        return kExitFailed;
    }
}

}  // namespace tameflare::cli
