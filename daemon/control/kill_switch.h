// The kill switch, durable: what the control plane sets and the daemon
// re-applies at start (the proxy holds the one in force).
#pragma once

#include "daemon/proxy/data_plane.h"
#include "daemon/store/store.h"
#include "policy/engine.h"

#include <string>

namespace tameflare::control {

// The kill switch, durable: set() records it (kill_switch.activated or
// .deactivated) before it takes effect, restore() re-applies it at start.
class KillSwitchControl {
public:
    KillSwitchControl(store::Store& store, proxy::DataPlane& server) : store_(store), server_(server) {}
    // Applies the stored state; returns it (inactive when none was stored).
    policy::KillSwitch restore();
    void set(const policy::KillSwitch& kill_switch, const std::string& reason, const std::string& actor);

    static std::string to_json(const policy::KillSwitch& kill_switch, const std::string& reason,
                               const std::string& actor);
    static policy::KillSwitch from_json(const std::string& json);

private:
    store::Store& store_;
    proxy::DataPlane& server_;
};

}  // namespace tameflare::control
