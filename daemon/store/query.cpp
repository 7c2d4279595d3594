#include "daemon/store/query.h"

// Placeholder: being written.
