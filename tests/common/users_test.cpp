// Users and groups from the system's own databases (root and its group exist
// on every system).
#include "common/users.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tameflare {
namespace {

TEST(Users, RootIsFoundByNameAndById) {
    const auto by_name = user_by_name("root");
    ASSERT_TRUE(by_name.has_value());
    EXPECT_EQ(by_name->uid, 0u);
    EXPECT_EQ(by_name->gid, 0u);
    EXPECT_FALSE(by_name->home.empty());
    const auto by_id = user_by_id(0);
    ASSERT_TRUE(by_id.has_value());
    EXPECT_EQ(by_id->name, "root");
    EXPECT_EQ(user_name(0), "root");
    const auto groups = user_groups(*by_name);
    EXPECT_NE(std::find(groups.begin(), groups.end(), 0u), groups.end());
}

TEST(Users, AnUnknownUserIsNotFound) {
    EXPECT_FALSE(user_by_name("tameflare-no-such-user").has_value());
    EXPECT_FALSE(user_by_id(4000000000u).has_value());
    EXPECT_EQ(user_name(4000000000u), "");
}

TEST(Groups, ANameOrANumberGivesTheId) {
    EXPECT_EQ(group_id("root"), 0u);
    EXPECT_EQ(group_id("0"), 0u);
    EXPECT_EQ(group_id("4242"), 4242u);  // a number need not have a name
    EXPECT_EQ(group_id("tameflare-no-such-group"), std::nullopt);
    EXPECT_EQ(group_id(""), std::nullopt);
    EXPECT_EQ(group_id("12x"), std::nullopt);
    EXPECT_TRUE(group_exists(0));
    EXPECT_FALSE(group_exists(4000000000u));
}

}  // namespace
}  // namespace tameflare
