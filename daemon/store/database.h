// One SQLite database file, opened the way tameflared needs it: WAL, foreign
// files and corrupt files refused (never overwritten), the schema migrated to
// the current version in one transaction. Statement wraps sqlite3_stmt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace tameflare::store {

// A database problem; what() says what, where and how to fix it.
class StoreError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The disk (or its quota) is full: writes fail until space is freed.
class StoreFullError : public StoreError {
public:
    using StoreError::StoreError;
};

class Statement {
public:
    Statement(sqlite3* db, std::string_view sql);
    Statement(Statement&&) noexcept = default;
    Statement& operator=(Statement&&) noexcept = default;
    ~Statement() = default;

    // Binding is 1-based, like SQLite's; each returns *this to chain.
    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, std::string_view value);
    Statement& bind_blob(int index, const void* data, std::size_t size);
    Statement& bind_null(int index);
    // Without a copy: the bytes must stay where they are until run() or
    // reset(), which drop the binding. For the writer's hot inserts, whose
    // row outlives the statement's run.
    Statement& bind_borrowed(int index, std::string_view value);
    Statement& bind_blob_borrowed(int index, const void* data, std::size_t size);

    // true: a row is ready; false: done. Throws StoreError on failure.
    bool step();
    // Runs a statement that returns no rows, then resets it.
    void run();
    void reset();

    [[nodiscard]] std::int64_t integer(int column) const;
    [[nodiscard]] std::string text(int column) const;
    [[nodiscard]] std::string blob(int column) const;
    [[nodiscard]] bool is_null(int column) const;

private:
    struct Finalize {
        void operator()(sqlite3_stmt* statement) const;
    };
    // *this when a bind returned SQLITE_OK; a StoreError otherwise.
    Statement& checked(int code);
    sqlite3* db_ = nullptr;
    std::unique_ptr<sqlite3_stmt, Finalize> statement_;
};

class Database {
public:
    enum class Mode { read_write, read_only };
    enum class Sync { full, normal };

    // Opens (creating when absent, in read_write) and migrates `path`. A file
    // that is not a tameflared database, is corrupt, or comes from a newer
    // version is refused with a StoreError naming the file and what to do.
    static Database open(const std::filesystem::path& path, Mode mode = Mode::read_write, Sync sync = Sync::full);

    Database(Database&&) noexcept = default;
    Database& operator=(Database&&) noexcept = default;
    ~Database() = default;

    void exec(std::string_view sql);
    Statement prepare(std::string_view sql);
    [[nodiscard]] sqlite3* handle() const { return db_.get(); }
    [[nodiscard]] const std::filesystem::path& path() const { return path_; }
    [[nodiscard]] int schema_version() const;

    // One value from a one-row query ("PRAGMA page_count").
    std::int64_t scalar(std::string_view sql);

    // The current schema version this build writes.
    static int current_version();

    // A StoreError (or StoreFullError) for the last failure of `db`.
    [[noreturn]] static void fail(sqlite3* db, int code, std::string_view doing);

private:
    struct Close {
        void operator()(sqlite3* db) const;
    };
    Database(std::unique_ptr<sqlite3, Close> db, std::filesystem::path path);
    void validate_and_migrate(Mode mode);
    friend class Transaction;

    std::unique_ptr<sqlite3, Close> db_;
    std::filesystem::path path_;
    // BEGIN IMMEDIATE and COMMIT, prepared at the first Transaction: the
    // store's writer runs one per batch, and sqlite3_exec would parse them
    // again each time. After db_, so they are finalized first.
    std::optional<Statement> begin_;
    std::optional<Statement> commit_;
};

// RAII transaction: BEGIN IMMEDIATE now, ROLLBACK unless commit() ran.
class Transaction {
public:
    explicit Transaction(Database& db);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& db_;
    bool done_ = false;
};

}  // namespace tameflare::store
