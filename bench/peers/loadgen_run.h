// One tf_loadgen run: the connections, the warm-up and the measured window
// (or, in idle mode, the hold), on one thread and one io_context.
#pragma once

#include "bench/peers/loadgen_options.h"

#include <nlohmann/json.hpp>

#include <string>

namespace tameflare::loadgen {

struct Outcome {
    nlohmann::ordered_json report;  // the one JSON object for stdout
    std::string failure;            // why the run counts as failed; empty when something succeeded
};

// Throws std::runtime_error when the run cannot start (a name that does not
// resolve, a CA file that does not load); failing requests are counted instead.
Outcome run(const Options& options);

}  // namespace tameflare::loadgen
