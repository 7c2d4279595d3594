// The shipped connectors, loaded once per fuzzing process. Read directly, so
// the fuzz targets link only the policy library.
#pragma once

#include "policy/config.h"
#include "policy/document.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace tameflare::fuzz {

inline const std::vector<policy::Document>& shipped_connectors() {
    static const auto docs = [] {
        std::vector<std::filesystem::path> paths;
        for (const auto& entry : std::filesystem::directory_iterator(std::string(TF_SOURCE_DIR) + "/connectors")) {
            if (entry.path().extension() == ".json") paths.push_back(entry.path());
        }
        std::sort(paths.begin(), paths.end());
        std::vector<policy::Document> out;
        for (const auto& path : paths) {
            std::ifstream in(path);
            out.push_back({path.string(), std::string(std::istreambuf_iterator<char>(in), {})});
        }
        if (out.empty()) {
            std::fputs("no connector files found\n", stderr);
            std::abort();
        }
        return out;
    }();
    return docs;
}

}  // namespace tameflare::fuzz
