#include "daemon/store/database.h"

#include "common/unique_fd.h"
#include "daemon/store/schema.h"

#include <fcntl.h>
#include <sqlite3.h>

#include <array>
#include <cstring>
#include <fstream>
#include <system_error>

namespace tameflare::store {

namespace {

// "TFLD": marks a file as a tameflared database (PRAGMA application_id).
constexpr std::int64_t kApplicationId = 0x54464C44;

std::string where(const std::filesystem::path& path) {
    return "database " + path.string();
}

}  // namespace

// ---------------------------------------------------------------------------
// Statement

void Statement::Finalize::operator()(sqlite3_stmt* statement) const {
    sqlite3_finalize(statement);
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
    sqlite3_stmt* raw = nullptr;
    const int code =
        sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    statement_.reset(raw);
    if (code != SQLITE_OK) Database::fail(db, code, "preparing \"" + std::string(sql.substr(0, 60)) + "\"");
}

Statement& Statement::checked(int code) {
    if (code != SQLITE_OK) Database::fail(db_, code, "binding a value");
    return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
    return checked(sqlite3_bind_int64(statement_.get(), index, value));
}

Statement& Statement::bind(int index, std::string_view value) {
    return checked(
        sqlite3_bind_text64(statement_.get(), index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Statement& Statement::bind_blob(int index, const void* data, std::size_t size) {
    return checked(sqlite3_bind_blob64(statement_.get(), index, data, size, SQLITE_TRANSIENT));
}

Statement& Statement::bind_borrowed(int index, std::string_view value) {
    return checked(
        sqlite3_bind_text64(statement_.get(), index, value.data(), value.size(), SQLITE_STATIC, SQLITE_UTF8));
}

Statement& Statement::bind_blob_borrowed(int index, const void* data, std::size_t size) {
    return checked(sqlite3_bind_blob64(statement_.get(), index, data, size, SQLITE_STATIC));
}

Statement& Statement::bind_null(int index) {
    return checked(sqlite3_bind_null(statement_.get(), index));
}

bool Statement::step() {
    const int code = sqlite3_step(statement_.get());
    if (code == SQLITE_ROW) return true;
    if (code == SQLITE_DONE) return false;
    sqlite3_reset(statement_.get());
    sqlite3_clear_bindings(statement_.get());  // no borrowed binding outlives a failure
    Database::fail(db_, code, "running \"" + std::string(sqlite3_sql(statement_.get())).substr(0, 60) + "\"");
}

void Statement::run() {
    while (step()) {
    }
    reset();
}

void Statement::reset() {
    sqlite3_reset(statement_.get());
    sqlite3_clear_bindings(statement_.get());
}

std::int64_t Statement::integer(int column) const {
    return sqlite3_column_int64(statement_.get(), column);
}

std::string Statement::text(int column) const {
    const auto* data = sqlite3_column_text(statement_.get(), column);
    const int size = sqlite3_column_bytes(statement_.get(), column);
    return data == nullptr ? std::string()
                           : std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
}

std::string Statement::blob(int column) const {
    const void* data = sqlite3_column_blob(statement_.get(), column);
    const int size = sqlite3_column_bytes(statement_.get(), column);
    return data == nullptr ? std::string()
                           : std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
}

bool Statement::is_null(int column) const {
    return sqlite3_column_type(statement_.get(), column) == SQLITE_NULL;
}

// ---------------------------------------------------------------------------
// Database

void Database::Close::operator()(sqlite3* db) const {
    sqlite3_close_v2(db);
}

Database::Database(std::unique_ptr<sqlite3, Close> db, std::filesystem::path path)
    : db_(std::move(db)), path_(std::move(path)) {}

void Database::fail(sqlite3* db, int code, std::string_view doing) {
    const int primary = code & 0xff;
    const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
    const std::string name = file != nullptr && *file != '\0' ? file : "(the database)";
    const std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    if (primary == SQLITE_FULL || (code == SQLITE_IOERR_WRITE && errno == ENOSPC)) {
        throw StoreFullError("database " + name + ": " + std::string(doing) + ": " + detail +
                             "; free space on its file system (or raise store.retention limits lower)");
    }
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
        throw StoreError("database " + name + " is corrupt (" + detail + ") while " + std::string(doing) +
                         "; tameflared never overwrites it: move it aside (keep it for investigation) and restart");
    }
    if (primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_PERM) {
        throw StoreError("database " + name + ": " + std::string(doing) + ": " + detail +
                         "; check that the state directory exists and is writable by tameflared (reading a "
                         "database while the daemon is stopped also needs to create its -shm file there: run as "
                         "root or as the daemon's user)");
    }
    throw StoreError("database " + name + ": " + std::string(doing) + ": " + detail);
}

Database Database::open(const std::filesystem::path& path, Mode mode, Sync sync) {
    // A non-empty file that is not SQLite at all is refused before SQLite
    // sees it, so nothing can ever be written into it.
    std::error_code error;
    const auto size = std::filesystem::file_size(path, error);
    if (!error && size > 0) {
        std::array<char, 16> header{};
        std::ifstream in(path, std::ios::binary);
        in.read(header.data(), header.size());
        if (!in || std::memcmp(header.data(), "SQLite format 3", 16) != 0) {
            throw StoreError(where(path) +
                             " is not a SQLite database (a foreign or damaged file); tameflared never overwrites "
                             "it: move it aside or set store.database to another path");
        }
    } else if (mode == Mode::read_only && error) {
        throw StoreError(where(path) + " does not exist; is this the daemon's state directory (--state-dir)?");
    }

    if (mode == Mode::read_write && error) {
        // Created here, 0600, so SQLite's -wal and -shm files (which copy the
        // database's mode) are private too.
        const UniqueFd created(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!created && errno != EEXIST) {
            throw StoreError("cannot create " + where(path) + ": " + std::strerror(errno) +
                             "; check that the state directory exists and is writable by tameflared");
        }
    }
    // Memory statistics off, before SQLite initializes: with them on, every
    // sqlite3_malloc and sqlite3_free takes a global mutex, and the traffic
    // log's writer makes about 26 allocations per transaction. Nothing reads
    // the statistics. Once SQLite is initialized the call is refused
    // (SQLITE_MISUSE) and changes nothing, which is also fine.
    static const int memstatus = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)memstatus;
    sqlite3* raw = nullptr;
    const int flags = (mode == Mode::read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                      SQLITE_OPEN_NOMUTEX;
    const int code = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    std::unique_ptr<sqlite3, Close> handle(raw);
    if (code != SQLITE_OK) fail(raw, code, "opening");
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, 5000);

    Database db(std::move(handle), path);
    db.validate_and_migrate(mode);
    if (mode == Mode::read_write) {
        db.exec(sync == Sync::full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    }
    db.exec("PRAGMA foreign_keys=ON");
    return db;
}

void Database::validate_and_migrate(Mode mode) {
    const std::int64_t application = scalar("PRAGMA application_id");
    const std::int64_t version = scalar("PRAGMA user_version");
    const std::int64_t objects = scalar("SELECT count(*) FROM sqlite_schema");
    if (application != kApplicationId && !(application == 0 && version == 0 && objects == 0)) {
        throw StoreError(where(path_) +
                         " belongs to another program (its application id is not tameflared's); tameflared never "
                         "overwrites it: move it aside or set store.database to another path");
    }
    if (version > current_version()) {
        throw StoreError(where(path_) + " has schema version " + std::to_string(version) + ", newer than this " +
                         "tameflared understands (" + std::to_string(current_version()) +
                         "); run the newer tameflared, or restore a backup made for this version");
    }
    if (mode == Mode::read_only) {
        if (version == 0) throw StoreError(where(path_) + " is empty: tameflared has not written it yet");
        return;
    }
    if (version == current_version()) {
        exec("PRAGMA journal_mode=WAL");
        return;
    }
    // A new file: incremental auto-vacuum must be chosen before any table
    // exists, so retention can give space back to the file system.
    if (objects == 0) exec("PRAGMA auto_vacuum=INCREMENTAL");
    exec("PRAGMA journal_mode=WAL");
    Transaction transaction(*this);
    for (auto step = version + 1; step <= current_version(); ++step) {
        exec(migration(static_cast<int>(step)));
        exec("PRAGMA user_version=" + std::to_string(step));
    }
    exec("PRAGMA application_id=" + std::to_string(kApplicationId));
    transaction.commit();
}

int Database::current_version() {
    return latest_schema_version();
}

int Database::schema_version() const {
    Statement statement(db_.get(), "PRAGMA user_version");
    statement.step();
    return static_cast<int>(statement.integer(0));
}

void Database::exec(std::string_view sql) {
    const std::string text(sql);
    char* message = nullptr;
    const int code = sqlite3_exec(db_.get(), text.c_str(), nullptr, nullptr, &message);
    sqlite3_free(message);
    if (code != SQLITE_OK) fail(db_.get(), code, "running \"" + text.substr(0, 60) + "\"");
}

Statement Database::prepare(std::string_view sql) {
    return Statement(db_.get(), sql);
}

std::int64_t Database::scalar(std::string_view sql) {
    Statement statement(db_.get(), sql);
    return statement.step() ? statement.integer(0) : 0;
}

// ---------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Database& db) : db_(db) {
    if (!db_.begin_) db_.begin_.emplace(db_.handle(), "BEGIN IMMEDIATE");
    db_.begin_->run();
}

Transaction::~Transaction() {
    if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
    if (!db_.commit_) db_.commit_.emplace(db_.handle(), "COMMIT");
    db_.commit_->run();
    done_ = true;
}

}  // namespace tameflare::store
