#include "daemon/store/schema.h"

#include <array>

namespace tameflare::store {

namespace {

// Times are microseconds since the Unix epoch (UTC).
constexpr std::array kMigrations = {
    // 1: the traffic log and the hash-chained audit log.
    R"sql(
CREATE TABLE traffic (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    gateway TEXT NOT NULL,
    agent TEXT NOT NULL,
    connector TEXT NOT NULL,
    action TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    forwarded INTEGER NOT NULL,
    completed INTEGER NOT NULL
);
CREATE INDEX traffic_time ON traffic (time);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    event TEXT NOT NULL,
    gateway TEXT NOT NULL,
    agent TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX audit_time ON audit (time);
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    time INTEGER NOT NULL,
    key_id BLOB NOT NULL,
    mac BLOB NOT NULL
);
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
)sql",
    // 2: the vault and the runtime state that survives a restart.
    R"sql(
CREATE TABLE vault (
    name TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    connector TEXT NOT NULL,
    hint TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    last_used INTEGER
);
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    agent TEXT NOT NULL,
    connector TEXT NOT NULL,
    action TEXT NOT NULL,
    risk TEXT NOT NULL,
    parameters TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested INTEGER NOT NULL,
    timeout_s INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    answered INTEGER,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX approvals_state ON approvals (state);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    name TEXT NOT NULL,
    uid INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    command TEXT NOT NULL,
    started INTEGER NOT NULL,
    exited INTEGER,
    exit_code INTEGER
);
CREATE TABLE runtime_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
};

}  // namespace

int latest_schema_version() {
    return static_cast<int>(kMigrations.size());
}

const char* migration(int version) {
    return kMigrations.at(static_cast<std::size_t>(version - 1));
}

}  // namespace tameflare::store
