#include "daemon/control/authorizer.h"

#include "common/users.h"

#include <algorithm>

namespace tameflare::control {

namespace {

using Kind = ControlError::Kind;

bool in_group(const Caller& caller, const std::string& name) {
    const auto gid = group_id(name);
    if (!gid) return false;
    return caller.gid == *gid || std::find(caller.groups.begin(), caller.groups.end(), *gid) != caller.groups.end();
}

const std::string& group_for(const RoleGroups& groups, Role role) {
    switch (role) {
        case Role::owner: return groups.owner;
        case Role::admin: return groups.admin;
        case Role::member: return groups.member;
        default: return groups.viewer;
    }
}

std::string_view what_needs(Role role) {
    switch (role) {
        case Role::owner: return "the kill switch needs the owner role";
        case Role::admin: return "changing gateways, the configuration or the vault needs the admin role";
        case Role::member: return "answering approvals needs the member role";
        default: return "reading the daemon's state needs the viewer role";
    }
}

}  // namespace

std::string_view to_string(Role role) noexcept {
    switch (role) {
        case Role::owner: return "owner";
        case Role::admin: return "admin";
        case Role::member: return "member";
        case Role::viewer: return "viewer";
        case Role::none: break;
    }
    return "none";
}

Role role_of(const Caller& caller, const RoleGroups& groups) {
    if (caller.uid == 0) return Role::owner;
    for (const auto role : {Role::owner, Role::admin, Role::member, Role::viewer}) {
        if (in_group(caller, group_for(groups, role))) return role;
    }
    return Role::none;
}

bool may_launch(const Caller& caller, const policy::Gateway& gateway) {
    if (caller.uid == 0) return true;
    const std::string user = user_name(caller.uid);
    if (!user.empty() &&
        std::find(gateway.launch_users.begin(), gateway.launch_users.end(), user) != gateway.launch_users.end()) {
        return true;
    }
    return std::any_of(gateway.launch_groups.begin(), gateway.launch_groups.end(),
                       [&](const std::string& name) { return in_group(caller, name); });
}

Authorizer::Authorizer(RoleGroups groups, std::function<bool(const Caller&)> in_agent)
    : groups_(std::move(groups)), in_agent_(std::move(in_agent)) {}

Role Authorizer::authorize(const Caller& caller, Role least) const {
    // Before anything else: an agent is refused whatever its uid and groups
    // (a uid-0 agent is still an agent).
    if (in_agent_(caller)) {
        throw ControlError(Kind::forbidden, "agent_caller",
                           "the caller runs inside an agent's cgroup; agents may not use the control plane",
                           "run tf from a shell outside the agent");
    }
    const Role role = role_of(caller, groups_);
    if (static_cast<int>(role) < static_cast<int>(least)) {
        throw ControlError(
            Kind::forbidden, "forbidden",
            std::string(what_needs(least)) + "; uid " + std::to_string(caller.uid) + " has " +
                (role == Role::none ? "no role" : "the " + std::string(to_string(role)) + " role"),
            "ask an owner to add the user to group " + group_for(groups_, least) + " (or a higher role's group)");
    }
    return role;
}

void Authorizer::authorize_launch(const Caller& caller, const policy::Gateway* gateway) const {
    if (in_agent_(caller)) {
        throw ControlError(Kind::forbidden, "agent_caller", "agents cannot launch agents",
                           "run tf run outside any agent");
    }
    if (gateway != nullptr && !may_launch(caller, *gateway)) {
        throw ControlError(Kind::forbidden, "launch_refused",
                           "user " + std::to_string(caller.uid) + " may not launch agents on gateway " + gateway->name,
                           "an administrator adds the user or a group of it to \"launch\" in the gateway's file");
    }
}

void Authorizer::authorize_enforcement(const Caller& caller, std::string_view what) const {
    if (caller.uid != 0) {
        throw ControlError(Kind::forbidden, "forbidden", "only root may " + std::string(what),
                           "run tf enforce as root");
    }
    if (in_agent_(caller)) {
        throw ControlError(Kind::forbidden, "agent_caller", "agents cannot change enforcement",
                           "run tf enforce from a shell outside any agent");
    }
}

}  // namespace tameflare::control
