// Feeds arbitrary bytes to the config loader, as a gateway file and as a
// connector file. Any input must load or be refused with errors that name
// the file; nothing may crash, hang or leak. The gateway is loaded against the
// small shipped connectors (github's 50 routes would cost more time per
// input than the gateway itself), and the seeds use those.
#include "fuzz_support.h"

#include "policy/engine.h"

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tameflare;
    const std::string text(reinterpret_cast<const char*>(data), size);

    static const auto small = [] {
        std::vector<policy::Document> docs;
        for (const auto& doc : fuzz::shipped_connectors()) {
            for (const char* name : {"/mcp.json", "/http.json", "/webhook.json", "/anthropic.json"}) {
                if (doc.origin.ends_with(name)) docs.push_back(doc);
            }
        }
        return docs;
    }();
    auto as_gateway = policy::load_config(small, {{"fuzz-gateway.json", text}});
    if (as_gateway.ok() == !as_gateway.errors.empty()) std::abort();
    for (const auto& error : as_gateway.errors) {
        if (error.file.empty() || error.message.empty()) std::abort();
        (void)error.to_string();
    }
    if (as_gateway.ok()) {
        // A gateway that loads must also decide a request without failing.
        for (const auto& [name, gateway] : as_gateway.config->gateways) {
            const policy::Request request{"POST", "api.anthropic.com", "/v1/messages", "application/json",
                                          R"({"model":"m"})"};
            (void)policy::evaluate(*gateway, request, {});
        }
    }

    auto as_connector = policy::load_config({{"fuzz-connector.json", text}}, {});
    if (as_connector.ok() == !as_connector.errors.empty()) std::abort();
    return 0;
}
