// Running a test client as another user with one role's group, through
// setpriv (util-linux): the control plane decides by the kernel's view of
// the caller, so role tests need real uids and gids, not a claimed identity.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tameflare::testing {

struct Identity {
    unsigned uid;
    std::string_view group;  // a gid; "" : no supplementary group at all
};

inline std::vector<std::string> as(const Identity& who, const std::vector<std::string>& argv) {
    std::vector<std::string> out{"/usr/bin/setpriv", "--reuid=" + std::to_string(who.uid),
                                 "--regid=" + std::to_string(who.uid)};
    out.push_back(who.group.empty() ? std::string("--clear-groups") : "--groups=" + std::string(who.group));
    out.emplace_back("--");
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
}

}  // namespace tameflare::testing
