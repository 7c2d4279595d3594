// Glob patterns over action names: '*' any run of characters (dots included),
// '?' exactly one character, everything else literal.
#include "policy/glob.h"

#include <gtest/gtest.h>

#include <string>

namespace tameflare::policy {
namespace {

TEST(Glob, AnExactPatternMatchesOnlyTheSameText) {
    EXPECT_TRUE(glob_match("github.pr.merge", "github.pr.merge"));
    EXPECT_FALSE(glob_match("github.pr.merge", "github.pr.merged"));
    EXPECT_FALSE(glob_match("github.pr.merge", "github.pr.merg"));
    EXPECT_FALSE(glob_match("github.pr.merge", "github.pr"));
    EXPECT_FALSE(glob_match("github.pr", "github.pr.merge"));
    EXPECT_FALSE(glob_match("github.pr.merge", "xgithub.pr.merge"));
}

TEST(Glob, MatchingIsCaseSensitive) {
    EXPECT_FALSE(glob_match("GitHub.pr.merge", "github.pr.merge"));
    EXPECT_FALSE(glob_match("github.*", "GITHUB.pr.merge"));
}

TEST(Glob, StarAtTheEndMatchesAnySuffixIncludingDots) {
    EXPECT_TRUE(glob_match("github.*", "github.pr.merge"));
    EXPECT_TRUE(glob_match("github.pr.*", "github.pr.merge"));
    EXPECT_TRUE(glob_match("github.pr.*", "github.pr."));
    EXPECT_FALSE(glob_match("github.pr.*", "github.pr"));
    EXPECT_FALSE(glob_match("github.pr.*", "github.issue.create"));
}

TEST(Glob, StarAtTheStartMatchesAnyPrefix) {
    EXPECT_TRUE(glob_match("*.delete", "github.repo.delete"));
    EXPECT_TRUE(glob_match("*.delete", ".delete"));
    EXPECT_FALSE(glob_match("*.delete", "github.repo.deleted"));
    EXPECT_FALSE(glob_match("*.delete", "delete"));
}

TEST(Glob, StarInTheMiddleMatchesAnyRun) {
    EXPECT_TRUE(glob_match("github.*.delete", "github.repo.delete"));
    EXPECT_TRUE(glob_match("github.*.delete", "github.release.asset.delete"));
    EXPECT_FALSE(glob_match("github.*.delete", "github.delete"));
    EXPECT_FALSE(glob_match("github.*.delete", "stripe.repo.delete"));
    EXPECT_TRUE(glob_match("a*c", "ac"));
    EXPECT_TRUE(glob_match("a*c", "abbbc"));
    EXPECT_FALSE(glob_match("a*c", "abcb"));
}

TEST(Glob, AStarAloneMatchesEverythingEvenEmpty) {
    EXPECT_TRUE(glob_match("*", ""));
    EXPECT_TRUE(glob_match("*", "github.pr.merge"));
    EXPECT_TRUE(glob_match("*", "*"));
}

TEST(Glob, StarsNeedToBacktrack) {
    EXPECT_TRUE(glob_match("*ab", "aab"));
    EXPECT_TRUE(glob_match("*.merge", "x.merge.merge"));
    EXPECT_TRUE(glob_match("a*b*c", "abxbc"));
    EXPECT_TRUE(glob_match("a*b*c", "aXbYbZc"));
    EXPECT_FALSE(glob_match("a*b*c", "acb"));
    EXPECT_FALSE(glob_match("*a*b", "ba"));
    EXPECT_TRUE(glob_match("*issue*comment*", "github.issue.comment.create"));
    EXPECT_FALSE(glob_match("*comment*issue*", "github.issue.comment.create"));
}

TEST(Glob, QuestionMarkMatchesExactlyOneCharacter) {
    EXPECT_TRUE(glob_match("github.p?.merge", "github.pr.merge"));
    EXPECT_FALSE(glob_match("github.p?.merge", "github.p.merge"));
    EXPECT_FALSE(glob_match("github.p?.merge", "github.prr.merge"));
    EXPECT_TRUE(glob_match("a?c", "a.c"));  // a dot is just a character
    EXPECT_FALSE(glob_match("?", ""));
    EXPECT_TRUE(glob_match("?", "x"));
    EXPECT_TRUE(glob_match("???", "abc"));
    EXPECT_FALSE(glob_match("???", "ab"));
    EXPECT_TRUE(glob_match("*?", "a"));
    EXPECT_FALSE(glob_match("*?", ""));
    EXPECT_TRUE(glob_match("?*?", "ab"));
    EXPECT_FALSE(glob_match("?*?", "a"));
}

TEST(Glob, DotsAreOrdinaryCharacters) {
    EXPECT_FALSE(glob_match("github.pr", "githubxpr"));
    EXPECT_FALSE(glob_match("a.b", "ab"));
    EXPECT_TRUE(glob_match("a.b", "a.b"));
    EXPECT_FALSE(glob_match(".", "x"));
    EXPECT_TRUE(glob_match("..", ".."));
}

TEST(Glob, OtherRegexAndShellCharactersAreLiteral) {
    EXPECT_TRUE(glob_match("a+b", "a+b"));
    EXPECT_FALSE(glob_match("a+b", "aab"));
    EXPECT_FALSE(glob_match("[ab]", "a"));
    EXPECT_TRUE(glob_match("[ab]", "[ab]"));
    EXPECT_FALSE(glob_match("a\\*", "ab"));  // no escaping: '\' is literal, '*' still a star
    EXPECT_TRUE(glob_match("a\\*", "a\\b"));
}

TEST(Glob, EmptyPatternAndEmptyText) {
    EXPECT_TRUE(glob_match("", ""));
    EXPECT_FALSE(glob_match("", "a"));
    EXPECT_FALSE(glob_match("a", ""));
    EXPECT_TRUE(glob_match("**", ""));
    EXPECT_FALSE(glob_match("*a", ""));
}

TEST(Glob, ManyStarsActLikeOne) {
    EXPECT_TRUE(glob_match("***", "abc"));
    EXPECT_TRUE(glob_match("a**b", "ab"));
    EXPECT_TRUE(glob_match("a**b", "axxb"));
    EXPECT_TRUE(glob_match("***a***", "a"));
    EXPECT_TRUE(glob_match("***a***", "xxaxx"));
    EXPECT_FALSE(glob_match("***a***", "xxbxx"));
    EXPECT_TRUE(glob_match("*.*.*", "github.pr.merge"));
    EXPECT_TRUE(glob_match("*.*.*", ".."));
    EXPECT_FALSE(glob_match("*.*.*", "github.pr"));
}

TEST(Glob, APathologicalPatternOnALongTextReturns) {
    // An exponential matcher would never finish this.
    const std::string text(10000, 'a');
    EXPECT_FALSE(glob_match("*a*a*a*a*a*b", text));
    EXPECT_TRUE(glob_match("*a*a*a*a*a*b", text + "b"));
    EXPECT_TRUE(glob_match("*a*a*a*a*a", text));
    EXPECT_FALSE(glob_match("*a*a*a*a*a*a", "aaaaa"));
    EXPECT_FALSE(glob_match("*?*?*?*b", text));
}

TEST(Glob, HasGlobCharsSeesStarsAndQuestionMarks) {
    EXPECT_TRUE(has_glob_chars("github.*"));
    EXPECT_TRUE(has_glob_chars("*"));
    EXPECT_TRUE(has_glob_chars("github.p?.merge"));
    EXPECT_FALSE(has_glob_chars("github.pr.merge"));
    EXPECT_FALSE(has_glob_chars(""));
    EXPECT_FALSE(has_glob_chars("[a]+"));
}

}  // namespace
}  // namespace tameflare::policy
