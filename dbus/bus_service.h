// The D-Bus front end of the control plane: com.tameflare.Daemon1 on the
// system bus (sd-bus), the same operations as the REST socket with the same
// authorization (every call goes through control::Control with the sender's
// credentials), live events as signals and PropertiesChanged, and one object
// per gateway, agent and pending approval under an ObjectManager.
// docs/dbus.md is the reference.
#pragma once

#include <memory>
#include <string>

namespace tameflare::control {
class AgentRegistry;
class Control;
}  // namespace tameflare::control
namespace tameflare::policy {
class ConfigStore;
}
namespace tameflare::proxy {
class ApprovalQueue;
}

namespace tameflare::dbus {

inline constexpr const char* kBusName = "com.tameflare.Daemon1";
inline constexpr const char* kObjectPath = "/com/tameflare/Daemon1";
inline constexpr const char* kInterface = "com.tameflare.Daemon1";

struct BusOptions {
    // "system" (sd_bus_open_system, which honours DBUS_SYSTEM_BUS_ADDRESS) or
    // "session" (for development as an ordinary user).
    std::string bus = "system";
    // When set, this address instead of the bus's default ("unix:path=...").
    std::string address;
    std::string name = kBusName;
};

// What the bus lists without asking Control: which sub-objects exist.
// Reading their properties is authorized per call; only their existence is
// public to whoever the bus policy lets talk to the daemon.
struct BusSources {
    const policy::ConfigStore* config = nullptr;      // required
    const proxy::ApprovalQueue* approvals = nullptr;  // required
    control::AgentRegistry* agents = nullptr;         // null: kernel enforcement is off (Launch refused)
};

class BusService {
public:
    // Connects, takes the name and registers the objects; throws
    // std::runtime_error with the reason (no bus, name taken, policy).
    BusService(BusOptions options, control::Control& control, BusSources sources);
    ~BusService();
    BusService(const BusService&) = delete;
    BusService& operator=(const BusService&) = delete;

    // Serves on its own thread; events of control.events() become signals.
    void start();
    // Releases the name, closes the connection and joins (also done by the destructor).
    void stop();

    // The unique name the daemon got on the bus (":1.42").
    [[nodiscard]] std::string unique_name() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace tameflare::dbus
