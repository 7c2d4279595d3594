#include "daemon/proxy/credential.h"

#include <gtest/gtest.h>

namespace tameflare::proxy {
namespace {

TEST(Credential, TheSecretGoesWhereTheFormatSays) {
    EXPECT_EQ(render_credential("Bearer {secret}", "s3cr3t"), "Bearer s3cr3t");
    EXPECT_EQ(render_credential("token {secret}", "ghp_x"), "token ghp_x");
    EXPECT_EQ(render_credential("{secret}", "sk-ant"), "sk-ant");
}

// HTTP Basic as GitHub's git endpoints take a token: base64("x-access-token:" + token). The expected values are
// what `printf %s 'x-access-token:vault-github-secret' | base64` prints.
TEST(Credential, BasicIsTheBase64OfUserColonSecret) {
    EXPECT_EQ(render_credential("Basic {basic:x-access-token}", "vault-github-secret"),
              "Basic eC1hY2Nlc3MtdG9rZW46dmF1bHQtZ2l0aHViLXNlY3JldA==");
    EXPECT_EQ(render_credential("Basic {basic:u}", ""), "Basic dTo=");
    EXPECT_EQ(render_credential("Basic {basic:api}", "k"), "Basic YXBpOms=");
}

}  // namespace
}  // namespace tameflare::proxy
