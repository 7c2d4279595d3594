// The whole policy configuration: connector definitions and gateways, loaded
// from documents, validated, compiled, and published as one immutable value.
#pragma once

#include "policy/config_error.h"
#include "policy/connector.h"
#include "policy/document.h"
#include "policy/gateway.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tameflare::policy {

// Enforcement levels set at run time (tf gateways set-enforcement), by
// gateway name; they replace what the gateway files say.
using EnforcementOverrides = std::map<std::string, Enforcement, std::less<>>;

struct Config {
    // What a loaded config was compiled from: the unprivileged data plane
    // is sent these and compiles its own (issue 24).
    struct Sources {
        std::vector<Document> connectors;
        std::vector<Document> gateways;
        EnforcementOverrides enforcement;
    };

    std::map<std::string, std::shared_ptr<const ConnectorDef>> connectors;
    std::map<std::string, std::shared_ptr<const Gateway>> gateways;
    std::shared_ptr<const Sources> sources;  // null for a config not made by load_config

    [[nodiscard]] const Gateway* gateway(std::string_view name) const;
};

struct LoadResult {
    std::shared_ptr<const Config> config;  // null when there are errors
    ConfigErrors errors;
    [[nodiscard]] bool ok() const { return config != nullptr; }
};

// Connector documents first (each one connector), then gateway documents (each
// one gateway). Every error in every document is reported, not just the first.
// `enforcement` replaces the levels the gateway files say.

LoadResult load_config(const std::vector<Document>& connectors, const std::vector<Document>& gateways,
                       const EnforcementOverrides& enforcement = {});

// The config the data path reads. Readers take a snapshot (one atomic load) and
// keep it for the whole request; a reload swaps in a new one, or keeps the old
// one when the new one has errors.
class ConfigStore {
public:
    explicit ConfigStore(std::shared_ptr<const Config> initial = std::make_shared<const Config>())
        : current_(std::move(initial)) {}

    [[nodiscard]] std::shared_ptr<const Config> snapshot() const { return current_.load(std::memory_order_acquire); }
    void publish(std::shared_ptr<const Config> next) { current_.store(std::move(next), std::memory_order_release); }

    // Loads and publishes; on errors keeps the current config and returns them.
    ConfigErrors reload(const std::vector<Document>& connectors, const std::vector<Document>& gateways);

private:
    std::atomic<std::shared_ptr<const Config>> current_;
};

}  // namespace tameflare::policy
