// Users and groups through NSS (getpwnam_r and friends), with buffers that
// grow as large entries (directory services) need.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace tameflare {

struct UserEntry {
    uid_t uid = 0;
    gid_t gid = 0;  // the primary group
    std::string name;
    std::string home;  // "" when the entry has none
};

std::optional<UserEntry> user_by_name(const std::string& name);
std::optional<UserEntry> user_by_id(uid_t uid);

// The user's login name, "" when the uid has none.
std::string user_name(uid_t uid);

// Every group the user is in: the primary group and the supplementary ones.
std::vector<gid_t> user_groups(const UserEntry& user);

// The group's id: a name, or a number given as decimal digits. nullopt when
// it is neither.
std::optional<gid_t> group_id(const std::string& group);

// Whether the group id has an entry in the group database.
bool group_exists(gid_t gid);

}  // namespace tameflare
