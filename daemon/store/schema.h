// The database schema, as the ordered list of migrations that builds it.
// Version N is reached by running migration(1) .. migration(N) in order; a
// released migration is never edited, a change is a new one.
#pragma once

namespace tameflare::store {

int latest_schema_version();
// The SQL that moves the schema from version - 1 to `version`.
const char* migration(int version);

}  // namespace tameflare::store
