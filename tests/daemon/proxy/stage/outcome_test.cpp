#include "daemon/proxy/stage/outcome.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace tameflare::proxy::stage {
namespace {

// Every policy label keeps its spelling through the outcome: the store, the
// metrics and `tf logs --decision` read records written before the enum.
TEST(Outcome, EveryPolicyLabelIsSpelledAsThePolicySpellsIt) {
    for (const auto label :
         {policy::Label::allowed, policy::Label::denied, policy::Label::would_deny, policy::Label::pending_approval,
          policy::Label::would_require_approval, policy::Label::rate_limited, policy::Label::would_rate_limit,
          policy::Label::kill_switch}) {
        EXPECT_EQ(to_string(outcome_of(label)), policy::to_string(label));
    }
}

TEST(Outcome, TheOutcomesAfterADecisionHaveTheirOwnSpellings) {
    EXPECT_EQ(to_string(Outcome::approved), "approved");
    EXPECT_EQ(to_string(Outcome::approval_timeout), "approval_timeout");
    EXPECT_EQ(to_string(Outcome::error), "error");
}

TEST(Outcome, NoTwoOutcomesShareASpelling) {
    std::set<std::string> seen;
    for (int value = 0; value <= static_cast<int>(Outcome::error); ++value) {
        EXPECT_TRUE(seen.insert(std::string(to_string(static_cast<Outcome>(value)))).second) << value;
    }
    EXPECT_EQ(seen.size(), 11U);
}

}  // namespace
}  // namespace tameflare::proxy::stage
