// The D-Bus front end's logic without the bus: what each method and property
// answers for a caller, which D-Bus error a refusal becomes, and which
// signals and object changes each control event becomes. The connection
// (bus_methods.cpp, bus_service.cpp) only moves values between sd-bus
// messages and this seam, so the logic is tested in-process, without a bus
// and without root (tests/dbus/bus_front_test.cpp). The interface itself is
// com.tameflare.Daemon1.xml, checked against the vtables on a real bus.
#pragma once

#include "common/caller.h"
#include "common/unique_fd.h"
#include "daemon/control/agent_registry.h"
#include "daemon/control/events.h"
#include "daemon/control/model.h"
#include "dbus/bus_service.h"

#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tameflare::dbus {

inline constexpr const char* kGatewayPrefix = "/com/tameflare/Daemon1/gateway";
inline constexpr const char* kAgentPrefix = "/com/tameflare/Daemon1/agent";
inline constexpr const char* kApprovalPrefix = "/com/tameflare/Daemon1/approval";
inline constexpr const char* kGatewayInterface = "com.tameflare.Daemon1.Gateway";
inline constexpr const char* kAgentInterface = "com.tameflare.Daemon1.Agent";
inline constexpr const char* kApprovalInterface = "com.tameflare.Daemon1.Approval";
inline constexpr std::string_view kErrorPrefix = "com.tameflare.Daemon1.Error.";

// ListAgents' (ssuus).
struct AgentRow {
    std::string id;
    std::string gateway;
    std::uint32_t uid = 0;
    std::uint32_t pid = 0;
    std::string isolation;
    bool operator==(const AgentRow&) const = default;
};

// ListApprovals' (sssssst).
struct ApprovalRow {
    std::string id;
    std::string gateway;
    std::string agent;
    std::string action;
    std::string risk;
    std::string parameters;  // JSON text
    std::uint64_t age_seconds = 0;
    bool operator==(const ApprovalRow&) const = default;
};

// A unix fd argument ('h'): the message owns it.
struct BorrowedFd {
    int fd = -1;
    bool operator==(const BorrowedFd&) const = default;
};

using StringPairs = std::vector<std::pair<std::string, std::string>>;

// One argument or reply value, by its D-Bus type: s, b, i, u, t, as,
// a{ss}, a(ssuus), a(sssssst), h.
using BusValue = std::variant<std::string, bool, std::int32_t, std::uint32_t, std::uint64_t, std::vector<std::string>,
                              StringPairs, std::vector<AgentRow>, std::vector<ApprovalRow>, BorrowedFd>;

// The D-Bus signature of a value ("s", "a{ss}", ...).
std::string signature_of(const BusValue& value);

// A call's arguments in order. The bus has checked them against the
// method's signature; a mismatch (only a test can make one) is bad_arguments.
class CallArgs {
public:
    CallArgs() = default;
    explicit CallArgs(std::vector<BusValue> values) : values_(std::move(values)) {}

    [[nodiscard]] const std::string& text(std::size_t i) const { return at<std::string>(i); }
    [[nodiscard]] bool boolean(std::size_t i) const { return at<bool>(i); }
    [[nodiscard]] const std::vector<std::string>& strings(std::size_t i) const {
        return at<std::vector<std::string>>(i);
    }
    [[nodiscard]] const StringPairs& pairs(std::size_t i) const { return at<StringPairs>(i); }
    [[nodiscard]] int fd(std::size_t i) const { return at<BorrowedFd>(i).fd; }

private:
    template <typename T>
    const T& at(std::size_t i) const;
    std::vector<BusValue> values_;
};

// The caller of a message, as the bus and the kernel tell it.
struct Identity {
    Caller caller;
    UniqueFd pidfd;
};

// What a call does: a caller whose process cannot be shown to be the one
// that opened its bus connection may still read, but not change anything.
enum class Effect { read, change };

// Which object a call or property belongs to (by its interface).
enum class ObjectKind { main, gateway, agent, approval };

// One incoming method call, for the logic.
struct MethodCall {
    ObjectKind object = ObjectKind::main;
    std::string label;   // the sub-object's gateway name, agent id or approval id; "" for the main object
    std::string member;  // "Reload"
    CallArgs args;
    std::string sender;  // the caller's unique name (":1.42")
};

// A D-Bus error: its name and its text.
struct Failure {
    std::string name;
    std::string message;
};

// "unknown_approval" -> "com.tameflare.Daemon1.Error.UnknownApproval".
std::string error_name(std::string_view code);
// What an exception thrown by a call becomes on the bus: a ControlError
// its code's error with the hint, anything else Internal.
Failure failure_of(const std::exception& error);

// What the daemon sends on its own: a signal (to everyone, or only to
// `destination`), an object appearing or going (InterfacesAdded/Removed), or
// properties changing (PropertiesChanged).
struct Emission {
    enum class Kind { signal, added, removed, changed };
    Kind kind = Kind::signal;
    std::string path;
    std::string interface;                // signal, changed
    std::string member;                   // signal
    std::vector<BusValue> args;           // signal
    std::string destination;              // signal: "" to everyone
    std::vector<std::string> properties;  // changed
};

class BusFront {
public:
    BusFront(control::Control& control, BusSources sources);

    // Reads the daemon's pending approvals, agents and gateways into what
    // the own emissions read. Call it after subscribing to the events, so
    // that none falls between.
    void load();

    [[nodiscard]] control::Control& control() const { return control_; }
    [[nodiscard]] const BusSources& sources() const { return sources_; }

    // Whether a method changes state (unknown ones count as changing).
    static Effect effect_of(ObjectKind object, std::string_view member);

    // Answers a method for an identified caller: the reply's value, or
    // nullopt for an empty reply. Throws what Control throws (failure_of
    // names it); an unknown member is ControlError unknown_method.
    std::optional<BusValue> call(MethodCall& call, Identity& identity);

    // A property's value. With a caller: authorized and read from Control.
    // Without (the daemon's own InterfacesAdded and PropertiesChanged):
    // from what the events told, with nobody to authorize. Throws
    // ControlError unknown_property for a name the interface lacks, and
    // not_found for a sub-object that is gone.
    BusValue property(ObjectKind object, const std::string& label, std::string_view name, const Caller* caller);

    // The sub-objects that exist: the caches for the daemon's own
    // emissions (own), the daemon's state for a caller.
    [[nodiscard]] std::vector<std::string> labels(ObjectKind object, bool own) const;

    // What a control event becomes on the bus, in order; updates what the
    // daemon's own emissions read.
    std::vector<Emission> apply(const control::Event& event);
    // Gateway objects come and go with the configuration in force.
    std::vector<Emission> sync_gateways();

private:
    std::optional<BusValue> call_main(MethodCall& call, Identity& identity);
    BusValue main_property(std::string_view name, const Caller* caller);
    BusValue gateway_property(const std::string& label, std::string_view name, const Caller* caller);
    BusValue agent_property(const std::string& label, std::string_view name, const Caller* caller);
    BusValue approval_property(const std::string& label, std::string_view name, const Caller* caller);

    control::Control& control_;
    BusSources sources_;
    // What the daemon's own emissions read: the state as the events told it.
    std::map<std::string, control::Approval, std::less<>> approvals_;
    std::map<std::string, control::AgentInfo, std::less<>> agents_;
    std::set<std::string, std::less<>> gateways_;
    control::KillSwitchState kill_;
    std::map<std::string, std::string, std::less<>> launchers_;  // agent id -> the unique name that launched it
};

}  // namespace tameflare::dbus
