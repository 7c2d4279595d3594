#include "daemon/store/vault_store.h"

// Placeholder: being written.
