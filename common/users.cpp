#include "common/users.h"

#include <grp.h>
#include <pwd.h>

#include <cerrno>
#include <charconv>

namespace tameflare {

namespace {

constexpr std::size_t kFirstBuffer = 4096;
constexpr std::size_t kLargestBuffer = std::size_t{1} << 20;

// Calls `lookup(entry, buffer, size, found)` (a getpw*_r or getgr*_r call)
// with a buffer that doubles while the entry does not fit.
template <typename Entry, typename Lookup>
std::optional<Entry> with_buffer(std::vector<char>& buffer, Lookup lookup) {
    buffer.resize(kFirstBuffer);
    while (true) {
        Entry entry{};
        Entry* found = nullptr;
        const int error = lookup(&entry, buffer.data(), buffer.size(), &found);
        if (error == ERANGE && buffer.size() < kLargestBuffer) {
            buffer.resize(buffer.size() * 2);
            continue;
        }
        if (error != 0 || found == nullptr) return std::nullopt;
        return entry;
    }
}

std::optional<UserEntry> to_user(const std::optional<passwd>& entry) {
    if (!entry) return std::nullopt;
    UserEntry user;
    user.uid = entry->pw_uid;
    user.gid = entry->pw_gid;
    user.name = entry->pw_name != nullptr ? entry->pw_name : "";
    user.home = entry->pw_dir != nullptr ? entry->pw_dir : "";
    return user;
}

}  // namespace

std::optional<UserEntry> user_by_name(const std::string& name) {
    std::vector<char> buffer;
    return to_user(with_buffer<passwd>(buffer, [&](passwd* entry, char* data, std::size_t size, passwd** found) {
        return ::getpwnam_r(name.c_str(), entry, data, size, found);
    }));
}

std::optional<UserEntry> user_by_id(uid_t uid) {
    std::vector<char> buffer;
    return to_user(with_buffer<passwd>(buffer, [&](passwd* entry, char* data, std::size_t size, passwd** found) {
        return ::getpwuid_r(uid, entry, data, size, found);
    }));
}

std::string user_name(uid_t uid) {
    const auto user = user_by_id(uid);
    return user ? user->name : std::string();
}

std::vector<gid_t> user_groups(const UserEntry& user) {
    int count = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    while (::getgrouplist(user.name.c_str(), user.gid, groups.data(), &count) < 0) {
        groups.resize(static_cast<std::size_t>(count));
    }
    groups.resize(static_cast<std::size_t>(count));
    return groups;
}

std::optional<gid_t> group_id(const std::string& group) {
    if (group.empty()) return std::nullopt;
    gid_t numeric = 0;
    const auto [end, error] = std::from_chars(group.data(), group.data() + group.size(), numeric);
    if (error == std::errc{} && end == group.data() + group.size()) return numeric;
    std::vector<char> buffer;
    const auto entry =
        with_buffer<struct group>(buffer, [&](struct group* e, char* data, std::size_t size, struct group** found) {
            return ::getgrnam_r(group.c_str(), e, data, size, found);
        });
    if (!entry) return std::nullopt;
    return entry->gr_gid;
}

bool group_exists(gid_t gid) {
    std::vector<char> buffer;
    return with_buffer<struct group>(buffer,
                                     [&](struct group* e, char* data, std::size_t size, struct group** found) {
                                         return ::getgrgid_r(gid, e, data, size, found);
                                     })
        .has_value();
}

}  // namespace tameflare
