// The foundation's text helpers: hexadecimal digits, percent-decoding.
#include "common/text.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>

namespace tameflare {
namespace {

TEST(HexValue, ReadsEitherCaseAndRefusesTheRest) {
    EXPECT_EQ(hex_value('0'), 0);
    EXPECT_EQ(hex_value('9'), 9);
    EXPECT_EQ(hex_value('a'), 10);
    EXPECT_EQ(hex_value('F'), 15);
    for (const char c : {'g', 'G', ' ', '/', ':', '@', '`', '\0'}) EXPECT_EQ(hex_value(c), -1) << int(c);
}

TEST(AsciiLower, LowersAsciiLettersOnly) {
    EXPECT_EQ(ascii_lower("Content-Type: API.GitHub.COM"), "content-type: api.github.com");
    EXPECT_EQ(ascii_lower("caf\xC3\x89 [@`{]"), "caf\xC3\x89 [@`{]");  // bytes outside A-Z stay
    EXPECT_EQ(ascii_lower(""), "");
}

TEST(IsName, TakesItsCharactersAndLengthAndNothingElse) {
    EXPECT_TRUE(is_name("ci-runner_2", 63, Letters::lower, "_-"));
    EXPECT_FALSE(is_name("CI", 63, Letters::lower, "_-"));
    EXPECT_TRUE(is_name("CI", 63, Letters::any_case, "_-"));
    EXPECT_FALSE(is_name("a.b", 63, Letters::lower, "_-"));
    EXPECT_TRUE(is_name("a.b", 63, Letters::lower, "._-"));
    EXPECT_FALSE(is_name("", 63, Letters::any_case, "._-"));
    EXPECT_TRUE(is_name(std::string(63, 'a'), 63, Letters::lower, ""));
    EXPECT_FALSE(is_name(std::string(64, 'a'), 63, Letters::lower, ""));
    for (const char* bad : {"a/b", "a b", "a\nb", "caf\xC3\xA9", "a\0b"}) {
        EXPECT_FALSE(
            is_name(std::string_view(bad, bad[1] == '\0' ? 3 : std::strlen(bad)), 63, Letters::any_case, "._-"))
            << bad;
    }
    static_assert(is_name("ok", 2, Letters::lower, ""));
}

TEST(PercentDecode, DecodesEscapes) {
    EXPECT_EQ(percent_decode("hello%20world", false), "hello world");
    EXPECT_EQ(percent_decode("%41%42c", false), "ABc");
    EXPECT_EQ(percent_decode("%2f%2F", false), "//");  // either case of hex digit
    EXPECT_EQ(percent_decode("caf%C3%A9", false), "caf\xC3\xA9");
    EXPECT_EQ(percent_decode("plain-text_1.2~", false), "plain-text_1.2~");
    EXPECT_EQ(percent_decode("", false), "");
    EXPECT_EQ(percent_decode("%25", false), "%");
    EXPECT_EQ(percent_decode("%2525", false), "%25");  // decoded once, not twice
}

TEST(PercentDecode, TurnsPlusIntoASpaceOnlyWhenAsked) {
    EXPECT_EQ(percent_decode("a+b", true), "a b");
    EXPECT_EQ(percent_decode("a+b", false), "a+b");
    EXPECT_EQ(percent_decode("++", true), "  ");
    // An escaped plus is a plus either way.
    EXPECT_EQ(percent_decode("a%2Bb", true), "a+b");
    EXPECT_EQ(percent_decode("a%2Bb", false), "a+b");
    EXPECT_EQ(percent_decode("a%20b", true), "a b");
}

TEST(PercentDecode, RefusesATruncatedEscape) {
    EXPECT_EQ(percent_decode("%4", false), std::nullopt);
    EXPECT_EQ(percent_decode("%", false), std::nullopt);
    EXPECT_EQ(percent_decode("abc%", true), std::nullopt);
    EXPECT_EQ(percent_decode("abc%4", true), std::nullopt);
}

TEST(PercentDecode, RefusesBadHex) {
    EXPECT_EQ(percent_decode("%zz", false), std::nullopt);
    EXPECT_EQ(percent_decode("%4g", false), std::nullopt);
    EXPECT_EQ(percent_decode("%g4", false), std::nullopt);
    EXPECT_EQ(percent_decode("ok%%41", false), std::nullopt);
    EXPECT_EQ(percent_decode("% 41", false), std::nullopt);
    EXPECT_EQ(percent_decode("%-1", false), std::nullopt);
}

TEST(PercentDecode, KeepsAnEncodedNul) {
    const auto decoded = percent_decode("a%00b", false);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, std::string("a\0b", 3));
    EXPECT_EQ(decoded->size(), 3u);
}

TEST(PercentDecode, DecodesHighBytes) {
    const auto decoded = percent_decode("%FF%80", false);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, std::string("\xFF\x80"));
}

}  // namespace
}  // namespace tameflare
