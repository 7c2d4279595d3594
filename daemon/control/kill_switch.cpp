#include "daemon/control/kill_switch.h"

#include "common/log.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <vector>

namespace tameflare::control {

std::string KillSwitchControl::to_json(const policy::KillSwitch& kill_switch, const std::string& reason,
                                       const std::string& actor) {
    const nlohmann::json value = {{"all", kill_switch.all},
                                  {"gateways", kill_switch.gateways},
                                  {"connectors", kill_switch.connectors},
                                  {"reason", reason},
                                  {"actor", actor}};
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

policy::KillSwitch KillSwitchControl::from_json(const std::string& json) {
    policy::KillSwitch kill_switch;
    const auto value = nlohmann::json::parse(json, nullptr, false);
    if (!value.is_object()) {
        // Unreadable state fails closed: everything stays stopped.
        kill_switch.all = true;
        return kill_switch;
    }
    kill_switch.all = value.value("all", false);
    for (const auto& name : value.value("gateways", std::vector<std::string>{})) kill_switch.gateways.insert(name);
    for (const auto& name : value.value("connectors", std::vector<std::string>{})) kill_switch.connectors.insert(name);
    return kill_switch;
}

policy::KillSwitch KillSwitchControl::restore() {
    policy::KillSwitch kill_switch;
    if (const auto stored = store_.state("kill_switch")) {
        kill_switch = from_json(*stored);
        if (kill_switch.all || !kill_switch.gateways.empty() || !kill_switch.connectors.empty()) {
            log(LogLevel::warning, "kill switch still active from before the restart", {{"KILL_SWITCH", *stored}});
        }
    }
    server_.set_kill_switch(kill_switch);
    return kill_switch;
}

void KillSwitchControl::set(const policy::KillSwitch& kill_switch, const std::string& reason,
                            const std::string& actor) {
    const bool active = kill_switch.all || !kill_switch.gateways.empty() || !kill_switch.connectors.empty();
    const std::string json = to_json(kill_switch, reason, actor);
    const store::AuditEvent event{std::chrono::system_clock::now(),
                                  active ? "kill_switch.activated" : "kill_switch.deactivated",
                                  "",
                                  "",
                                  actor,
                                  "kill_switch",
                                  json};
    // Tripping takes effect at once, even if it cannot be recorded (the
    // caller still gets the error); lifting it happens only once recorded,
    // so a switch reported lifted is lifted after a crash, never the reverse.
    if (active) server_.set_kill_switch(kill_switch);
    store_.set_state("kill_switch", json, event);
    if (!active) server_.set_kill_switch(kill_switch);
    log(active ? LogLevel::warning : LogLevel::notice, active ? "kill switch activated" : "kill switch deactivated",
        {{"KILL_SWITCH", json}});
}

}  // namespace tameflare::control
