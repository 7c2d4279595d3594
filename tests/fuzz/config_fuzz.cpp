// Feeds arbitrary bytes to the config loader, as a gateway file and as a
// connector file. Any input must load or be refused with errors that name
// the file; nothing may crash, hang or leak.
#include "fuzz_support.h"

#include "policy/engine.h"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tameflare;
    const std::string text(reinterpret_cast<const char*>(data), size);

    auto as_gateway = policy::load_config(fuzz::shipped_connectors(), {{"fuzz-gateway.json", text}});
    if (as_gateway.ok() == !as_gateway.errors.empty()) std::abort();
    for (const auto& error : as_gateway.errors) {
        if (error.file.empty() || error.message.empty()) std::abort();
        (void)error.to_string();
    }
    if (as_gateway.ok()) {
        // A gateway that loads must also decide a request without failing.
        for (const auto& [name, gateway] : as_gateway.config->gateways) {
            const policy::Request request{"PUT", "api.github.com", "/repos/o/r/pulls/7/merge", "application/json", "{}"};
            (void)policy::evaluate(*gateway, request, {});
        }
    }

    auto connectors = fuzz::shipped_connectors();
    connectors.push_back({"fuzz-connector.json", text});
    auto as_connector = policy::load_config(connectors, {});
    if (as_connector.ok() == !as_connector.errors.empty()) std::abort();
    return 0;
}
