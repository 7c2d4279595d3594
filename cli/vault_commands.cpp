// tf vault set | list | remove | rotate: through the running tameflared
// (PUT, GET and DELETE /v1/vault, POST /v1/vault/rotate; role admin), or with
// --state-dir DIR on the vault in that state directory, through the store. A
// value goes in on standard input only and never comes out: list shows
// names, connectors and masked hints.
#include "cli/commands.h"

#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/daemon_call.h"
#include "cli/output.h"
#include "daemon/store/query.h"
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
    std::string state_dir;  // given: the files directly; else through the daemon
    std::string socket;
    std::string config;
    std::string connector;
    bool connector_given = false;
    bool json = false;
};

enum OptionId { kConfig = 'c', kStateDir = 256, kSocket, kConnector, kJson, kValue, kHelp };

const option kOptions[] = {
    {"config", required_argument, nullptr, kConfig},
    {"state-dir", required_argument, nullptr, kStateDir},
    {"socket", required_argument, nullptr, kSocket},
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

Without --state-dir, tf asks the running tameflared over its API socket (role
admin: root, or group tameflare-admin), and the daemon uses a new value at once:
  --socket PATH     the API socket (default: $TAMEFLARE_API_SOCKET, else api.socket
                    in the configuration, else /run/tameflare/api.sock)
  -c, --config FILE the daemon's configuration, to find the socket
                    (default /etc/tameflare/tameflared.json)
With --state-dir, tf works on the files in DIR directly (root or tameflared's
user), for when the daemon is stopped:
  --state-dir DIR   the daemon's state directory (/var/lib/tameflare)

The value is read from standard input, never from the command line (arguments
are visible to every user in /proc and ps):
  printf '%s' "$TOKEN" | tf vault set github_token --connector github
  tf vault set github_token < token.txt
In a terminal, tf vault set prompts and does not echo what you type.

rotate through the daemon re-encrypts every value and replaces the key while it
runs; rotate --state-dir refuses while tameflared runs (it holds the key).
Exit status: 0 done, 1 failed or refused (the message says why), 2 usage error
or unreadable input, 3 tameflared cannot be reached (without --state-dir).
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
            case kSocket: options.socket = optarg; break;
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
    if (!options.socket.empty() && !options.state_dir.empty()) {
        std::fprintf(stderr,
                     "tf vault %s: --socket asks the running daemon, --state-dir works on its files; give one\n",
                     sub.c_str());
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
void print_table(const std::vector<store::VaultEntry>& entries) {
    Table table({{"NAME", 0}, {"CONNECTOR"}, {"HINT"}, {"UPDATED"}, {"LAST_USED"}});
    for (const auto& entry : entries) {
        table.add({{entry.name},
                   {entry.connector},
                   {entry.hint},
                   {store::seconds_time(entry.updated)},
                   {entry.last_used ? store::seconds_time(*entry.last_used) : ""}});
    }
    table.print();
}

void print_json(const std::vector<store::VaultEntry>& entries) {
    auto array = nlohmann::json::array();
    for (const auto& entry : entries) {
        array.push_back(
            {{"name", entry.name},
             {"connector", entry.connector},
             {"hint", entry.hint},
             {"created", store::seconds_time(entry.created)},
             {"updated", store::seconds_time(entry.updated)},
             {"last_used", entry.last_used ? nlohmann::json(store::seconds_time(*entry.last_used)) : nullptr}});
    }
    std::printf("%s\n", array.dump(2).c_str());
}

// ---------------------------------------------------------------------------
// Through the daemon

DaemonCall daemon_call(const Options& options, const std::string& sub) {
    const std::string command = "tf vault " + sub;
    return DaemonCall{command, options.socket, options.config, false,
                      state_dir_hint(command + (sub == "set" || sub == "remove" ? " NAME" : ""), options.config)};
}

// The PUT body, wiped from memory however the call ends.
class SecretBody {
public:
    SecretBody(const Secret& value, const std::string& connector)
        : json_{{"value", value.text}, {"connector", connector}} {}
    SecretBody(const SecretBody&) = delete;
    SecretBody& operator=(const SecretBody&) = delete;
    ~SecretBody() {
        auto& value = json_["value"].get_ref<std::string&>();
        OPENSSL_cleanse(value.data(), value.size());
    }
    [[nodiscard]] const nlohmann::json& json() const { return json_; }

private:
    nlohmann::json json_;
};

int set_through_daemon(const Options& options, const std::string& name) {
    return run_with_daemon(daemon_call(options, "set"), [&](const ApiClient& client) {
        // Before the value is asked for: the daemon is there and lets this user change the vault.
        json_of(client.get("/v1/vault"));
        Secret value;
        if (!read_value(name, value)) return kExitUsage;
        const SecretBody body(value, options.connector);
        const auto stored = secret_stored_from_json(json_of(client.put("/v1/vault/" + url_encode(name), body.json())));
        std::printf("stored %s (%s)%s%s\n", name.c_str(), printable(stored.hint).c_str(),
                    options.connector.empty() ? "" : " for connector ", printable(options.connector).c_str());
        return kExitOk;
    });
}

int list_through_daemon(const Options& options) {
    return run_with_daemon(daemon_call(options, "list"), [&](const ApiClient& client) {
        const auto entries = vault_entries_from_json(json_of(client.get("/v1/vault")));
        if (options.json) {
            print_json(entries);
        } else {
            print_table(entries);
        }
        return kExitOk;
    });
}

int remove_through_daemon(const Options& options, const std::string& name) {
    return run_with_daemon(daemon_call(options, "remove"), [&](const ApiClient& client) {
        json_of(client.del("/v1/vault/" + url_encode(name)));
        std::printf("removed %s\n", name.c_str());
        return kExitOk;
    });
}

int rotate_through_daemon(const Options& options) {
    return run_with_daemon(daemon_call(options, "rotate"), [&](const ApiClient& client) {
        const auto count = vault_rotated_from_json(json_of(client.post("/v1/vault/rotate"))).rotated;
        std::printf("re-encrypted %llu value%s; tameflared uses the new vault key from now on\n",
                    static_cast<unsigned long long>(count), count == 1 ? "" : "s");
        return kExitOk;
    });
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
    if (options.state_dir.empty()) return set_through_daemon(options, name);
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
    if (options.state_dir.empty()) return list_through_daemon(options);
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
    if (options.state_dir.empty()) return remove_through_daemon(options, name);
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
    if (options.state_dir.empty()) return rotate_through_daemon(options);
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
