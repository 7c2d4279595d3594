// The REST API's request handling before Control is asked, without a socket:
// routes, targets, bodies and log queries, and their refusals.
#include "daemon/api/requests.h"

#include <gtest/gtest.h>

namespace tameflare::api {
namespace {

// The route a method and path reach, with its parameters (still encoded).
std::optional<std::pair<Op, std::vector<std::string_view>>> route(http::verb method, std::string_view path) {
    const auto segments = split_path(path);
    for (const auto& entry : kRoutes) {
        auto params = fit(entry.path, segments);
        if (params && entry.method == method) return std::pair{entry.op, *params};
    }
    return std::nullopt;
}

TEST(ApiRoutes, EachOperationHasItsPathAndMethod) {
    EXPECT_EQ(route(http::verb::get, "/v1/status")->first, Op::status);
    const auto gateway = route(http::verb::put, "/v1/gateways/ci/enforcement");
    ASSERT_TRUE(gateway);
    EXPECT_EQ(gateway->first, Op::set_enforcement);
    EXPECT_EQ(gateway->second, std::vector<std::string_view>{"ci"});
    EXPECT_EQ(route(http::verb::delete_, "/v1/vault/github-pat")->first, Op::vault_remove);
    EXPECT_EQ(route(http::verb::get, "/metrics")->first, Op::metrics);
    EXPECT_FALSE(route(http::verb::post, "/v1/status"));                // the path is there, not the method
    EXPECT_FALSE(route(http::verb::get, "/v1/gateways//enforcement"));  // an empty parameter fits nothing
    EXPECT_FALSE(route(http::verb::get, "/v1/gateways/ci/extra/x"));
    EXPECT_FALSE(route(http::verb::get, "v1/status"));
}

TEST(ApiTargets, QueriesAreDecodedAndBrokenOnesRefused) {
    const auto target = parse_target("/v1/traffic?gateway=ci%2Dbuild&agent=a+b&limit=");
    ASSERT_TRUE(target);
    EXPECT_EQ(target->path, "/v1/traffic");
    ASSERT_EQ(target->query.size(), 3u);
    EXPECT_EQ(target->query[0], (std::pair<std::string, std::string>{"gateway", "ci-build"}));
    EXPECT_EQ(target->query[1].second, "a b");
    EXPECT_EQ(target->query[2].second, "");
    EXPECT_EQ(parse_target("http://localhost/v1/status")->path, "/v1/status");  // absolute form: the host is ignored
    for (const char* bad : {"v1/status", "/v1/traffic?gateway=%zz", "/v1/traffic?gateway=a%00b", "*"}) {
        EXPECT_FALSE(parse_target(bad)) << bad;
    }
}

TEST(ApiBodies, AnObjectFieldByFieldOrARefusalNamingTheField) {
    EXPECT_TRUE(parse_object("").empty());
    EXPECT_TRUE(parse_object(" \n").empty());
    for (const char* bad : {"{", "[1]", "\"text\"", "null"}) {
        try {
            parse_object(bad);
            ADD_FAILURE() << bad << " was taken";
        } catch (const ApiError& error) {
            EXPECT_EQ(error.status, http::status::bad_request);
            EXPECT_EQ(error.code, "bad_json");
        }
    }
    const json body = {{"level", "full"}, {"on", "yes"}};
    EXPECT_EQ(string_field(body, "level", true), "full");
    EXPECT_EQ(string_field(body, "note", false), std::nullopt);
    try {
        bool_field(body, "on", true);
        ADD_FAILURE() << "a string was taken for a boolean";
    } catch (const ApiError& error) {
        EXPECT_EQ(error.code, "bad_field");
        EXPECT_EQ(error.message, "\"on\" must be true or false");
    }
    EXPECT_THROW(string_field(body, "reason", true), ApiError);
}

TEST(ApiLogQueries, FiltersAndFormatsOrARefusalWithTheFiltersThereAre) {
    const auto query = log_query({{"gateway", "ci"},
                                  {"decision", "denied"},
                                  {"limit", "5"},
                                  {"format", "csv"},
                                  {"since", "2026-11-26T10:00:00Z"},
                                  {"agent", ""}},
                                 false);
    EXPECT_EQ(query.filter.gateway, "ci");
    EXPECT_EQ(query.filter.decision, "denied");
    EXPECT_EQ(query.filter.limit, 5u);
    EXPECT_TRUE(query.filter.since.has_value());
    EXPECT_EQ(query.filter.agent, "");  // empty is "any"
    EXPECT_EQ(query.format, LogFormat::csv);
    EXPECT_EQ(log_query({{"event", "vault.set"}}, true).filter.event, "vault.set");

    const struct {
        Query query;
        bool audit;
        const char* message;
    } refused[] = {
        {{{"gateway", "a"}, {"gateway", "b"}}, false, "\"gateway\" is given twice"},
        {{{"since", "yesterday"}}, false, "\"since\" is neither an RFC 3339 time nor an age"},
        {{{"limit", "-1"}}, false, "\"limit\" must be a whole number"},
        {{{"format", "xml"}}, false, "\"format\" must be json, jsonl or csv"},
        {{{"event", "x"}}, false, "\"event\" is not a filter of this log"},
        {{{"decision", "denied"}}, true, "\"decision\" is not a filter of this log"},
    };
    for (const auto& c : refused) {
        try {
            log_query(c.query, c.audit);
            ADD_FAILURE() << c.message << ": taken";
        } catch (const ApiError& error) {
            EXPECT_EQ(error.message, c.message);
            EXPECT_EQ(error.code, "bad_field");
        }
    }
}

TEST(ApiErrors, TheDocumentCarriesCodeMessageAndHint) {
    const auto reply = error_reply(http::status::conflict, "busy", "it is busy", "try again");
    EXPECT_EQ(reply.status, http::status::conflict);
    EXPECT_EQ(json::parse(reply.body), (json{{"error", "busy"}, {"message", "it is busy"}, {"hint", "try again"}}));
    EXPECT_EQ(status_of(control::ControlError::Kind::forbidden), http::status::forbidden);
    EXPECT_EQ(status_of(control::ControlError::Kind::internal), http::status::internal_server_error);
}

}  // namespace
}  // namespace tameflare::api
