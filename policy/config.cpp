#include "policy/config.h"

#include "policy/json_reader.h"

namespace tameflare::policy {

const Gateway* Config::gateway(std::string_view name) const {
    const auto it = gateways.find(std::string(name));
    return it == gateways.end() ? nullptr : it->second.get();
}

LoadResult load_config(const std::vector<Document>& connector_docs, const std::vector<Document>& gateway_docs,
                       const EnforcementOverrides& enforcement) {
    LoadResult result;
    auto config = std::make_shared<Config>();
    std::map<std::string, std::string> connector_origin;
    for (const auto& doc : connector_docs) {
        JsonReader reader(doc.origin, result.errors);
        const auto json = reader.parse(doc.text);
        if (!json) continue;
        auto def = ConnectorDef::load(JsonNode(reader, *json, ""));
        if (!def) continue;
        const auto [it, inserted] = connector_origin.emplace(def->name, doc.origin);
        if (!inserted) {
            reader.error(
                "/name", "connector \"" + def->name + "\" is also defined in " + it->second,
                "rename one; to replace a shipped connector, give the file in connectors.d the same file name");
            continue;
        }
        config->connectors.emplace(def->name, std::move(def));
    }
    std::map<std::string, std::string> gateway_origin;
    for (const auto& doc : gateway_docs) {
        JsonReader reader(doc.origin, result.errors);
        const auto json = reader.parse(doc.text);
        if (!json) continue;
        auto gateway = Gateway::load(JsonNode(reader, *json, ""), config->connectors);
        if (!gateway) continue;
        if (const auto level = enforcement.find(gateway->name); level != enforcement.end()) {
            gateway->enforcement = level->second;
        }
        const auto [it, inserted] = gateway_origin.emplace(gateway->name, doc.origin);
        if (!inserted) {
            reader.error("/name", "duplicate gateway \"" + gateway->name + "\": also defined in " + it->second,
                         "gateway names are unique; rename or remove one of the files");
            continue;
        }
        config->gateways.emplace(gateway->name, std::move(gateway));
    }
    if (!result.errors.empty()) return result;
    config->sources =
        std::make_shared<const Config::Sources>(Config::Sources{connector_docs, gateway_docs, enforcement});
    result.config = std::move(config);
    return result;
}

ConfigErrors ConfigStore::reload(const std::vector<Document>& connectors, const std::vector<Document>& gateways) {
    auto result = load_config(connectors, gateways);
    if (result.ok()) publish(std::move(result.config));
    return std::move(result.errors);
}

}  // namespace tameflare::policy
