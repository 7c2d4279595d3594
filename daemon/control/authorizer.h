// Who may do what, decided in one place for every front end: the REST socket,
// D-Bus and the launch socket. A caller inside a managed agent's cgroup is
// refused everything, whatever its uid; roles come from unix groups (root is
// owner) and higher roles inherit the lower ones' permissions; who may launch
// agents on a gateway is the gateway's `launch` list (root everywhere).
// Refusals are ControlError (forbidden) with what was needed and how to get it.
#pragma once

#include "common/caller.h"
#include "common/error.h"
#include "policy/gateway.h"

#include <functional>
#include <string>
#include <string_view>

namespace tameflare::control {

enum class Role { none = 0, viewer = 1, member = 2, admin = 3, owner = 4 };
std::string_view to_string(Role role) noexcept;

// The unix groups that grant each role (configurable: "api.role_groups").
struct RoleGroups {
    std::string owner = "tameflare-owner";
    std::string admin = "tameflare-admin";
    std::string member = "tameflare-member";
    std::string viewer = "tameflare-viewer";
};

// Who is calling: common/caller.h.
using tameflare::Caller;

class ControlError : public Error {
public:
    enum class Kind { bad_request, forbidden, not_found, conflict, too_large, unavailable, internal };
    ControlError(Kind kind, std::string code, const std::string& message, std::string hint = {})
        : Error(message, std::move(hint)), kind_(kind), code_(std::move(code)) {}
    [[nodiscard]] Kind kind() const noexcept { return kind_; }
    [[nodiscard]] const std::string& code() const noexcept { return code_; }

private:
    Kind kind_;
    std::string code_;
};

// The strongest role the caller's uid, gid and groups grant.
Role role_of(const Caller& caller, const RoleGroups& groups);
// Whether the gateway's `launch` list (users, groups) names the caller; root may launch on every gateway.
bool may_launch(const Caller& caller, const policy::Gateway& gateway);

class Authorizer {
public:
    // `in_agent`: whether the caller runs inside a managed agent's cgroup
    // (each front end knows the caller's cgroup its own way; an unknown one
    // counts as an agent's).
    Authorizer(RoleGroups groups, std::function<bool(const Caller&)> in_agent);

    // Refuses a caller inside an agent, or without `least`; the caller's role.
    Role authorize(const Caller& caller, Role least) const;
    // Refuses a caller inside an agent ("agents cannot launch agents"), or
    // one that may not launch on `gateway`.
    // `gateway` null: an unknown gateway, which the caller reports once the
    // agent check has passed (an agent learns no gateway's name).
    void authorize_launch(const Caller& caller, const policy::Gateway* gateway) const;
    // Refuses a caller inside an agent, or other than root, to put a unit's
    // cgroup under enforcement or release it (tf enforce); `what` says which.
    void authorize_enforcement(const Caller& caller, std::string_view what) const;
    [[nodiscard]] const RoleGroups& groups() const noexcept { return groups_; }

private:
    RoleGroups groups_;
    std::function<bool(const Caller&)> in_agent_;
};

}  // namespace tameflare::control
