// The one parser of log filters by name (daemon/store/query.h), which the REST
// query string, D-Bus's a{ss} and tf's flags all go through.
#include "daemon/store/query.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace tameflare::store {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

const Clock::time_point kNow = Clock::time_point{} + std::chrono::hours(24 * 365 * 56);

TEST(LogFilterByName, EveryFilterOfTheTrafficLogLandsInItsField) {
    const auto filter = parse_log_filter({{"since", "2h"},
                                          {"until", "2026-11-26T10:00:00Z"},
                                          {"gateway", "ci"},
                                          {"agent", "a1"},
                                          {"connector", "github"},
                                          {"action", "github.pr.merge"},
                                          {"decision", "denied"},
                                          {"limit", "25"}},
                                         LogKind::traffic, kNow);
    ASSERT_TRUE(filter.since);
    EXPECT_EQ(*filter.since, kNow - std::chrono::hours(2));
    ASSERT_TRUE(filter.until);
    EXPECT_EQ(format_time(*filter.until), "2026-11-26T10:00:00.000000Z");
    EXPECT_EQ(filter.gateway, "ci");
    EXPECT_EQ(filter.agent, "a1");
    EXPECT_EQ(filter.connector, "github");
    EXPECT_EQ(filter.action, "github.pr.merge");
    EXPECT_EQ(filter.decision, "denied");
    EXPECT_EQ(filter.limit, 25U);
    EXPECT_TRUE(filter.event.empty());
}

TEST(LogFilterByName, TheAuditLogTakesEventAndAnEmptyValueMeansAny) {
    const auto filter = parse_log_filter({{"event", "action."}, {"since", ""}, {"limit", ""}}, LogKind::audit, kNow);
    EXPECT_EQ(filter.event, "action.");
    EXPECT_FALSE(filter.since);
    EXPECT_EQ(filter.limit, 0U);
}

TEST(LogFilterByName, BadNamesAndValuesAreRefusedNamingTheFilterWithAHint) {
    struct Case {
        Pairs pairs;
        LogKind kind;
        std::string name;
        std::string message;
        std::string hint;  // a part of it
    };
    const std::vector<Case> cases = {
        {{{"gateway", "a"}, {"gateway", "b"}}, LogKind::traffic, "gateway", "filter \"gateway\" is given twice", ""},
        {{{"since", "yesterday"}},
         LogKind::traffic,
         "since",
         "filter \"since\" is neither an RFC 3339 time nor an age",
         "7d"},
        {{{"until", "2026-13-01T00:00:00Z"}},
         LogKind::audit,
         "until",
         "filter \"until\" is neither an RFC 3339 time nor an age",
         "2026-11-26T10:00:00Z"},
        {{{"limit", "-1"}}, LogKind::traffic, "limit", "filter \"limit\" must be a whole number", "0 or none"},
        {{{"limit", "99999999999"}}, LogKind::audit, "limit", "filter \"limit\" must be a whole number", ""},
        {{{"event", "x"}}, LogKind::traffic, "event", "filter \"event\" is not a filter of this log", "decision"},
        {{{"decision", "denied"}},
         LogKind::audit,
         "decision",
         "filter \"decision\" is not a filter of this log",
         "event"},
        {{{"connector", "github"}},
         LogKind::audit,
         "connector",
         "filter \"connector\" is not a filter of this log",
         ""},
        {{{"format", "csv"}}, LogKind::traffic, "format", "filter \"format\" is not a filter of this log", "since"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.message);
        try {
            (void)parse_log_filter(c.pairs, c.kind, kNow);
            ADD_FAILURE() << "accepted";
        } catch (const FilterError& error) {
            EXPECT_EQ(error.name(), c.name);
            EXPECT_EQ(std::string(error.what()), c.message);
            EXPECT_NE(error.hint().find(c.hint), std::string::npos) << error.hint();
        }
    }
}

TEST(LogFilterByName, OneFilterAtATimeLeavesTheOthersAsTheyWere) {
    LogFilter filter;
    filter.gateway = "ci";
    set_log_filter(filter, LogKind::traffic, "agent", "a2", kNow);
    EXPECT_EQ(filter.gateway, "ci");
    EXPECT_EQ(filter.agent, "a2");
    EXPECT_THROW(set_log_filter(filter, LogKind::traffic, "limit", "ten", kNow), FilterError);
    EXPECT_EQ(filter.limit, 0U);
}

TEST(LogFilterByName, TheNamesOfEachLogAreListedForHelp) {
    EXPECT_EQ(log_filter_names(LogKind::traffic), "since, until, gateway, agent, connector, action, decision, limit");
    EXPECT_EQ(log_filter_names(LogKind::audit), "since, until, gateway, agent, action, event, limit");
}

}  // namespace
}  // namespace tameflare::store
