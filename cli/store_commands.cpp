// tf traffic query | export, tf audit query | export | verify: reading the
// daemon's logs back, from the running tameflared (GET /v1/traffic,
// /v1/audit, /v1/audit/verify; role viewer), or with --state-dir DIR from the
// database in DIR. The database is opened read-only, so these commands never
// change it and run beside a running tameflared.
#include "cli/commands.h"

#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/daemon_call.h"
#include "cli/output.h"

#include "common/atomic_file.h"
#include "daemon/store/audit.h"
#include "daemon/store/database.h"
#include "daemon/store/query.h"
#include "daemon/vault/vault_crypto.h"

#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tameflare::cli {

namespace {

namespace fs = std::filesystem;

constexpr const char* kTrafficHelp = R"(Usage: tf traffic query [FILTERS] [--limit N] [--format table|csv|jsonl]
       tf traffic export --format csv|jsonl [--output FILE [--force]] [FILTERS]

The traffic log: one row per request the proxy decided (metadata only, never a
body or a credential), printed oldest first. query shows the newest 50 matches
unless --limit says otherwise; export writes every match.

Filters (exact values; combine them freely):
  --since T            from T on: RFC 3339 (2026-11-26T10:00:00Z,
                       2026-11-26T11:00:00.5+01:00) or an age (90s, 15m, 2h, 7d)
  --until T            before T (the same forms)
  --gateway G  --agent A  --connector C  --action X
  --decision D         allowed, denied, pending_approval, rate_limited, kill_switch,
                       would_deny, would_require_approval, would_rate_limit,
                       approved, approval_timeout, error
Output:
  --limit N            the newest N matches (0: all)
  --format F           table (query's default; long cells are cut), csv (RFC 4180)
                       or jsonl (JSON Lines, every field)
  --output FILE        export: write FILE (mode 0600) atomically, by way of
                       FILE.tmp; an existing FILE is kept unless --force
)";

constexpr const char* kTrafficExit = R"(
Exit status: 0 done, 1 the daemon refused or failed, 2 usage or I/O error,
3 tameflared cannot be reached (without --state-dir).
)";

constexpr const char* kAuditHelp = R"(Usage: tf audit query [FILTERS] [--limit N] [--format table|csv|jsonl]
       tf audit export --format csv|jsonl [--output FILE [--force]] [FILTERS]
       tf audit verify [--key FILE]

The audit log: what happened and who caused it, in sequence. Each record's hash
covers the one before it, so a changed, removed or inserted record is found by
verify; checkpoints signed with the daemon's key catch a rewritten chain.

Filters:
  --since T, --until T RFC 3339 (2026-11-26T10:00:00Z) or an age (90s, 15m, 2h, 7d)
  --gateway G  --agent A
  --event E            one event (action.allowed), or all events under a prefix
                       that ends in '.' (action.)
  --action X           records whose details name action X
Output:
  --limit N            the newest N matches (query: default 50; 0: all)
  --format F           table (query's default), csv (RFC 4180) or jsonl
  --output FILE        export: write FILE (mode 0600) atomically; --force replaces it
verify:
  --key FILE           with --state-dir: the checkpoint key (default: DIR/audit.key
                       when readable); without it, checkpoint signatures are not
                       checked. Through the daemon, it checks with its own key
)";

constexpr const char* kAuditExit = R"(
Exit status: 0 done (verify: the log is intact), 1 verify found the log broken
or the daemon refused or failed, 2 usage or I/O error,
3 tameflared cannot be reached (without --state-dir).
)";

// Where either log comes from.
constexpr const char* kWhereFrom = R"(Where the log comes from: the running tameflared over its API socket (role
viewer), unless --state-dir is given:
  --socket PATH        the API socket (default: $TAMEFLARE_API_SOCKET, else api.socket
                       in the configuration, else /run/tameflare/api.sock)
  -c, --config FILE    the daemon's configuration, to find the socket
                       (default /etc/tameflare/tameflared.json)
  --state-dir DIR      read the database in DIR (DIR/tameflared.db) directly, as
                       root or tameflared's user; for when the daemon is stopped
)";

std::string traffic_usage() {
    return std::string(kTrafficHelp) + kWhereFrom + kTrafficExit;
}

std::string audit_usage() {
    return std::string(kAuditHelp) + kWhereFrom + kAuditExit;
}

enum OptionId {
    kConfig = 'c',
    kHelp = 'h',
    kStateDir = 256,
    kSince,
    kUntil,
    kGateway,
    kAgent,
    kConnector,
    kAction,
    kDecision,
    kEvent,
    kLimit,
    kFormat,
    kOutput,
    kForce,
    kKey,
    kSocket,
};

constexpr std::array kAllOptions = {
    option{"config", required_argument, nullptr, kConfig},
    option{"state-dir", required_argument, nullptr, kStateDir},
    option{"since", required_argument, nullptr, kSince},
    option{"until", required_argument, nullptr, kUntil},
    option{"gateway", required_argument, nullptr, kGateway},
    option{"agent", required_argument, nullptr, kAgent},
    option{"connector", required_argument, nullptr, kConnector},
    option{"action", required_argument, nullptr, kAction},
    option{"decision", required_argument, nullptr, kDecision},
    option{"event", required_argument, nullptr, kEvent},
    option{"limit", required_argument, nullptr, kLimit},
    option{"format", required_argument, nullptr, kFormat},
    option{"output", required_argument, nullptr, kOutput},
    option{"force", no_argument, nullptr, kForce},
    option{"key", required_argument, nullptr, kKey},
    option{"socket", required_argument, nullptr, kSocket},
    option{"help", no_argument, nullptr, kHelp},
};

using Log = store::LogKind;
enum class Verb { query, export_, verify };

// One sub-command: its name for messages, its usage, the options it takes.
struct Command {
    std::string name;  // "tf traffic query"
    std::string usage;
    Log log;
    Verb verb;
    std::vector<int> options;
};

struct Options {
    std::string state_dir;  // given: the database directly; else through the daemon
    std::string socket;
    std::string config_file;
    store::LogFilter filter;
    std::optional<store::Format> format;
    bool limit_given = false;
    std::string output;
    bool force = false;
    std::string key;
};

std::string option_name(int id) {
    for (const auto& entry : kAllOptions) {
        if (entry.val == id) return std::string("--") + entry.name;
    }
    return id < 256 ? std::string("-") + static_cast<char>(id) : "an option";
}

int usage_error(const Command& command, const std::string& message) {
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for the options.\n", command.name.c_str(), message.c_str(),
                 command.name.c_str());
    return kExitUsage;
}

// Fills `options` from `args` (args[0] is the sub-command's word). Returns
// nullopt to go on, or the exit status (after --help or an error).
std::optional<int> parse(std::span<char*> args, const Command& command, Options& options) {
    std::vector<option> table;
    for (const auto& entry : kAllOptions) {
        if (entry.val == kHelp ||
            std::find(command.options.begin(), command.options.end(), entry.val) != command.options.end()) {
            table.push_back(entry);
        }
    }
    table.push_back(option{nullptr, 0, nullptr, 0});

    optind = 0;  // a full reset of getopt's state
    opterr = 0;  // errors are reported below, naming the command
    const int argc = static_cast<int>(args.size());
    int c = 0;
    while ((c = getopt_long(argc, args.data(), "+:c:h", table.data(), nullptr)) != -1) {
        const std::string value = optarg != nullptr ? optarg : "";
        switch (c) {
            case kConfig: options.config_file = value; break;
            case kStateDir: options.state_dir = value; break;
            case kSocket: options.socket = value; break;
            case kSince:
            case kUntil:
            case kGateway:
            case kAgent:
            case kConnector:
            case kAction:
            case kDecision:
            case kEvent:
            case kLimit:
                if (auto refused = set_filter_flag(options.filter, command.log, option_name(c).substr(2), value)) {
                    return usage_error(command, *refused);
                }
                if (c == kLimit) options.limit_given = true;
                break;
            case kFormat: {
                const auto format = store::parse_format(value);
                const bool is_export = command.verb == Verb::export_;
                if (!format || (is_export && *format == store::Format::table)) {
                    return usage_error(command, "--format \"" + value + "\" is not " +
                                                    (is_export ? "an export format: give csv or jsonl"
                                                               : "a format: give table, csv or jsonl"));
                }
                options.format = format;
                break;
            }
            case kOutput: options.output = value; break;
            case kForce: options.force = true; break;
            case kKey: options.key = value; break;
            case kHelp: std::fputs(command.usage.c_str(), stdout); return kExitOk;
            case ':': return usage_error(command, option_name(optopt) + " needs a value");
            default: {
                const std::string given = optopt != 0 && optopt < 256 ? std::string("-") + static_cast<char>(optopt)
                                                                      : std::string(args[optind - 1]);
                return usage_error(command, "\"" + given + "\" is not an option of " + command.name);
            }
        }
    }
    if (optind < argc) return usage_error(command, std::string("unexpected argument \"") + args[optind] + "\"");
    if (!options.socket.empty() && !options.state_dir.empty()) {
        return usage_error(command, "--socket asks the running daemon, --state-dir reads its files; give one");
    }
    if (!options.key.empty() && options.state_dir.empty()) {
        return usage_error(command,
                           "--key goes with --state-dir DIR; through the daemon, tameflared checks with its own key");
    }
    return std::nullopt;
}

DaemonCall daemon_call(const Command& command, const Options& options) {
    return DaemonCall{command.name, options.socket, options.config_file, false,
                      state_dir_hint(command.name, options.config_file)};
}

// The database, read-only; nullopt after saying why not and what to do.
std::optional<store::Database> open_database(const Command& command, const StateLocation& location) {
    const auto& path = location.database;
    std::error_code error;
    if (!fs::exists(path, error)) {
        std::fprintf(stderr,
                     "%s: no database at %s: tameflared has not written one there yet, or this is not its state; "
                     "give the daemon's state directory with --state-dir DIR or its configuration with -c FILE\n",
                     command.name.c_str(), path.c_str());
        return std::nullopt;
    }
    if (::access(path.c_str(), R_OK) != 0) {
        std::fprintf(stderr, "%s: cannot read %s: %s; run it as root or as tameflared's user (sudo %s ...)\n",
                     command.name.c_str(), path.c_str(), std::strerror(errno), command.name.c_str());
        return std::nullopt;
    }
    try {
        return store::Database::open(path, store::Database::Mode::read_only);
    } catch (const store::StoreError& failure) {
        std::fprintf(stderr, "%s: %s\n", command.name.c_str(), failure.what());
        // SQLite reads a WAL database through its -shm file, which it must
        // create when the daemon is not running.
        const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
        if (::access(directory.c_str(), W_OK) != 0) {
            std::fprintf(stderr,
                         "%s: reading it needs write access to %s (for %s-shm) while tameflared is stopped; run it as "
                         "root or as tameflared's user\n",
                         command.name.c_str(), directory.c_str(), path.filename().c_str());
        }
        return std::nullopt;
    }
}

// ---------------------------------------------------------------------------
// Standard output that cannot be written (a file is written by common/atomic_file.h).

class OutputError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// query and export

// Writes the rows to --output FILE (atomically) or to `console`; `rows`
// writes them to the stream it is given and says how many. Then what is said
// after them: an empty result, a cut, the file written. A file or the console
// that cannot be written is an I/O error (2).
int write_rows(const Command& command, const Options& options, store::Format format, std::ostream& console,
               const std::function<std::size_t(std::ostream&)>& rows) {
    std::size_t count = 0;
    try {
        std::optional<AtomicFile> file;
        if (!options.output.empty())
            file.emplace(options.output, AtomicFileOptions{.mode = 0600, .replace = options.force});
        std::ostream& out = file ? file->stream() : console;
        count = rows(out);
        if (file) {
            file->commit();
        } else if (!out.flush()) {
            throw OutputError("writing standard output failed");
        }
    } catch (const store::StoreError& failure) {
        std::fprintf(stderr, "%s: %s\n", command.name.c_str(), failure.what());
        return kExitUsage;
    } catch (const OutputError& failure) {
        std::fprintf(stderr, "%s: %s\n", command.name.c_str(), failure.what());
        return kExitUsage;
    } catch (const FileExists& failure) {
        std::fprintf(stderr, "%s: %s; give --force to replace it, or another --output FILE\n", command.name.c_str(),
                     failure.what());
        return kExitUsage;
    } catch (const FileError& failure) {
        std::fprintf(stderr, "%s: %s%s%s\n", command.name.c_str(), failure.what(), failure.hint().empty() ? "" : "; ",
                     failure.hint().c_str());
        return kExitUsage;
    }

    if (format == store::Format::table) {
        if (count == 0) console << "(no matching records)\n";
        console.flush();
        if (count != 0 && count == options.filter.limit) {
            std::fprintf(stderr, "(the newest %zu matches; --limit N shows more, --limit 0 all)\n", count);
        }
    }
    if (!options.output.empty()) {
        std::fprintf(stderr, "%zu %s written to %s\n", count, count == 1 ? "record" : "records",
                     options.output.c_str());
    }
    return kExitOk;
}

int list(const Command& command, Options& options) {
    const bool is_export = command.verb == Verb::export_;
    if (is_export && !options.format) return usage_error(command, "give --format csv or --format jsonl");
    if (options.force && options.output.empty()) return usage_error(command, "--force goes with --output FILE");
    const auto format = options.format.value_or(store::Format::table);
    if (!is_export && !options.limit_given) options.filter.limit = 50;

    if (options.state_dir.empty()) {
        const auto kind = command.log == Log::traffic ? LogKind::traffic : LogKind::audit;
        return run_with_daemon(daemon_call(command, options), [&](const ApiClient& client) {
            RawOutput raw;
            std::ostream console(&raw);
            return write_rows(command, options, format, console,
                              [&](std::ostream& out) { return write_log(client, kind, options.filter, format, out); });
        });
    }

    const auto location = state_location(options.state_dir, options.config_file);
    if (!location) return kExitUsage;
    auto db = open_database(command, *location);
    if (!db) return kExitUsage;

    std::ios::sync_with_stdio(false);
    return write_rows(command, options, format, std::cout, [&](std::ostream& out) {
        std::size_t count = 0;
        if (command.log == Log::traffic) {
            store::TrafficWriter writer(out, format);
            writer.header();
            store::query_traffic(*db, options.filter, [&](const store::TrafficRow& row) {
                writer.write(row);
                ++count;
            });
        } else {
            store::AuditWriter writer(out, format);
            writer.header();
            store::query_audit(*db, options.filter, [&](const store::AuditRecord& record) {
                writer.write(record);
                ++count;
            });
        }
        return count;
    });
}

// ---------------------------------------------------------------------------
// verify

std::string counted(std::uint64_t n, const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
}

// A consistent view for the whole walk, even while tameflared writes.
class ReadSnapshot {
public:
    explicit ReadSnapshot(store::Database& db) : db_(db) { db_.exec("BEGIN"); }
    ReadSnapshot(const ReadSnapshot&) = delete;
    ReadSnapshot& operator=(const ReadSnapshot&) = delete;
    ~ReadSnapshot() {
        try {
            db_.exec("COMMIT");
        } catch (const store::StoreError&) {  // nothing was written: nothing to lose
        }
    }

private:
    store::Database& db_;
};

struct LoadedKey {
    std::optional<vault::VaultKey> key;
    std::string why_not;  // when there is no key: why
};

// The checkpoint key, read only: never created here. nullopt after an error
// message.
std::optional<LoadedKey> load_key(const Command& command, const Options& options, const StateLocation& location) {
    const bool given = !options.key.empty();
    const fs::path path = given ? fs::path(options.key) : location.audit_key;
    std::error_code error;
    if (!fs::exists(path, error)) {
        if (given) {
            std::fprintf(stderr, "%s: --key %s: no such file\n", command.name.c_str(), path.c_str());
            return std::nullopt;
        }
        return LoadedKey{std::nullopt, "there is no key at " + path.string()};
    }
    if (::access(path.c_str(), R_OK) != 0) {
        const std::string why = std::strerror(errno);
        if (given) {
            std::fprintf(stderr, "%s: cannot read --key %s: %s\n", command.name.c_str(), path.c_str(), why.c_str());
            return std::nullopt;
        }
        return LoadedKey{std::nullopt, "cannot read " + path.string() + ": " + why + " (run as root?)"};
    }
    try {
        return LoadedKey{vault::VaultKey::load(path), {}};
    } catch (const vault::VaultError& failure) {
        std::fprintf(stderr, "%s: the audit checkpoint key: %s\n", command.name.c_str(), failure.what());
        return std::nullopt;
    }
}

// The report, as both ways print it. `have_key`: the checkpoint signatures
// were checked with a key (else `why_not` says why not); `give_key` is how to
// give another one.
int print_report(const store::VerifyReport& report, bool have_key, const std::string& why_not, const char* give_key) {
    if (!report.ok) {
        std::printf("audit log BROKEN at record %lld: %s\n", static_cast<long long>(report.broken_seq),
                    printable(report.problem).c_str());
        return kExitFailed;
    }
    if (report.records == 0) {
        std::printf(
            "audit log OK: no records%s\n",
            report.first_seq > 1
                ? (" (records up to " + std::to_string(report.first_seq - 1) + " were removed by retention)").c_str()
                : "");
    } else {
        std::printf("audit log OK: %s (seq %lld..%lld), %s verified, %s after the last checkpoint\n",
                    counted(report.records, "record", "records").c_str(), static_cast<long long>(report.first_seq),
                    static_cast<long long>(report.last_seq),
                    counted(report.checkpoints, "signed checkpoint", "signed checkpoints").c_str(),
                    counted(report.after_last_checkpoint, "record", "records").c_str());
        if (report.first_seq > 1) {
            std::printf("records before %lld were removed by retention, as the chain records\n",
                        static_cast<long long>(report.first_seq));
        }
    }
    if (report.unsigned_checkpoints != 0) {
        const std::string checkpoints = counted(report.unsigned_checkpoints, "checkpoint", "checkpoints");
        if (have_key) {
            std::printf(
                "note: %s signed with another key (a rotated one?) only had their hashes compared; give that key "
                "with %s to check their signatures\n",
                checkpoints.c_str(), give_key);
        } else {
            std::printf(
                "note: the signatures of %s were not checked, only their hashes (%s); give the daemon's audit "
                "checkpoint key with %s to check them\n",
                checkpoints.c_str(), why_not.c_str(), give_key);
        }
    } else if (!have_key && report.records != 0) {
        std::printf("note: no checkpoint key (%s): a signature could not have been checked; give it with %s\n",
                    why_not.c_str(), give_key);
    }
    return kExitOk;
}

int verify(const Command& command, const Options& options) {
    if (options.state_dir.empty()) {
        // The daemon walks the chain with its own checkpoint key.
        return run_with_daemon(daemon_call(command, options), [](const ApiClient& client) {
            const auto report = verify_report_from_json(json_of(client.get("/v1/audit/verify")));
            return print_report(report, true, "", "--state-dir DIR --key FILE");
        });
    }
    const auto location = state_location(options.state_dir, options.config_file);
    if (!location) return kExitUsage;
    auto db = open_database(command, *location);
    if (!db) return kExitUsage;
    const auto key = load_key(command, options, *location);
    if (!key) return kExitUsage;

    store::VerifyReport report;
    try {
        const ReadSnapshot snapshot(*db);
        report = store::verify_audit(*db, key->key ? &*key->key : nullptr);
    } catch (const store::StoreError& failure) {
        std::fprintf(stderr, "%s: %s\n", command.name.c_str(), failure.what());
        return kExitUsage;
    }
    return print_report(report, key->key.has_value(), key->why_not, "--key FILE");
}

// ---------------------------------------------------------------------------

Command make_command(Log log, Verb verb) {
    const bool traffic = log == Log::traffic;
    Command command{std::string("tf ") + (traffic ? "traffic " : "audit ") +
                        (verb == Verb::query     ? "query"
                         : verb == Verb::export_ ? "export"
                                                 : "verify"),
                    traffic ? traffic_usage() : audit_usage(),
                    log,
                    verb,
                    {}};
    if (verb == Verb::verify) {
        command.options = {kConfig, kStateDir, kSocket, kKey};
        return command;
    }
    command.options = {kConfig, kStateDir, kSocket, kSince, kUntil, kGateway, kAgent, kAction, kLimit, kFormat};
    if (traffic) {
        command.options.insert(command.options.end(), {kConnector, kDecision});
    } else {
        command.options.push_back(kEvent);
    }
    if (verb == Verb::export_) command.options.insert(command.options.end(), {kOutput, kForce});
    return command;
}

int dispatch(std::span<char*> args, Log log) {
    const char* group = log == Log::traffic ? "traffic" : "audit";
    const std::string usage = log == Log::traffic ? traffic_usage() : audit_usage();
    if (args.size() < 2) {
        std::fprintf(stderr, "tf %s: give a sub-command\n\n%s", group, usage.c_str());
        return kExitUsage;
    }
    const std::string_view word = args[1];
    if (word == "--help" || word == "-h" || word == "help") {
        std::fputs(usage.c_str(), stdout);
        return kExitOk;
    }
    std::optional<Verb> verb;
    if (word == "query") verb = Verb::query;
    if (word == "export") verb = Verb::export_;
    if (word == "verify" && log == Log::audit) verb = Verb::verify;
    if (!verb) {
        std::fprintf(stderr, "tf %s: unknown sub-command \"%s\"\n\n%s", group, args[1], usage.c_str());
        return kExitUsage;
    }
    const Command command = make_command(log, *verb);
    Options options;
    if (const auto status = parse(args.subspan(1), command, options)) return *status;
    return *verb == Verb::verify ? verify(command, options) : list(command, options);
}

}  // namespace

int audit_command(std::span<char*> args) {
    return dispatch(args, Log::audit);
}

int traffic_command(std::span<char*> args) {
    return dispatch(args, Log::traffic);
}

}  // namespace tameflare::cli
