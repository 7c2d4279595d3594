// Helpers shared by the policy tests: loading the shipped connectors and
// building gateways from JSON text.
#pragma once

#include "policy/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tameflare::policy::testing {

inline std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline std::vector<Document> shipped_connectors() {
    std::vector<Document> docs;
    for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(TF_SOURCE_DIR) / "connectors")) {
        if (entry.path().extension() == ".json") docs.push_back({entry.path().string(), read_text(entry.path())});
    }
    return docs;
}

// Loads the shipped connectors and the given gateway documents; fails the
// test (with every error) when the configuration does not load.
inline std::shared_ptr<const Config> load_or_fail(const std::vector<std::string>& gateways) {
    std::vector<Document> docs;
    for (std::size_t i = 0; i < gateways.size(); ++i)
        docs.push_back({"gateway" + std::to_string(i) + ".json", gateways[i]});
    auto result = load_config(shipped_connectors(), docs);
    EXPECT_TRUE(result.ok()) << format_errors(result.errors);
    return result.config;
}

}  // namespace tameflare::policy::testing
