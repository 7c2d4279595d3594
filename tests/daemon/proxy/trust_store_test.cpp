// The Java trust store, read by Java's own keytool: every certificate of the
// bundle is a trusted entry (a PKCS#12 without the trusted-usage attribute
// would load with none), under the documented password; bad bundles are
// refused with the reason.
#include "daemon/proxy/trust_store.h"

#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace tameflare::proxy {
namespace {

std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), {}};
}

// Two self-signed certificates made by the openssl command, as a bundle.
std::string two_certificates(const std::filesystem::path& dir) {
    std::string bundle;
    for (const std::string name : {"one", "two"}) {
        const auto cert = (dir / (name + ".pem")).string();
        const auto result =
            testing::run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-keyout", (dir / (name + ".key")).string(), "-out", cert, "-days", "1", "-subj",
                          "/CN=TameFlare test " + name});
        EXPECT_EQ(result.status, 0) << result.err;
        bundle += read_text(cert);
    }
    return bundle;
}

TEST(JavaTrustStore, KeytoolListsEveryCertificateAsATrustedEntry) {
    const testing::TempDir dir("tf-trust");
    const std::string bundle = two_certificates(dir.path());
    const auto store = dir.path() / "trust.p12";
    std::ofstream(store, std::ios::binary) << java_trust_store(bundle);
    const auto listed = testing::run({"/usr/bin/keytool", "-list", "-keystore", store.string(), "-storetype", "PKCS12",
                                      "-storepass", std::string(kTrustStorePassword)});
    ASSERT_EQ(listed.status, 0) << listed.out << listed.err;
    EXPECT_NE(listed.out.find("Your keystore contains 2 entries"), std::string::npos) << listed.out;
    EXPECT_NE(listed.out.find("cert-1, "), std::string::npos) << listed.out;
    EXPECT_NE(listed.out.find("cert-2, "), std::string::npos) << listed.out;
    std::istringstream lines(listed.out);
    int trusted = 0;
    for (std::string line; std::getline(lines, line);) trusted += line.find("trustedCertEntry") != std::string::npos;
    EXPECT_EQ(trusted, 2) << listed.out;
    // The MAC holds: another password is refused.
    const auto wrong = testing::run({"/usr/bin/keytool", "-list", "-keystore", store.string(), "-storetype", "PKCS12",
                                     "-storepass", "not-the-password"});
    EXPECT_NE(wrong.status, 0) << wrong.out;
    EXPECT_EQ(java_trust_options("/run/tameflare/ca-trust.p12"),
              "-Djavax.net.ssl.trustStore=/run/tameflare/ca-trust.p12 -Djavax.net.ssl.trustStoreType=PKCS12 "
              "-Djavax.net.ssl.trustStorePassword=changeit");
}

TEST(JavaTrustStore, ABundleWithoutCertificatesIsRefused) {
    for (const std::string bundle : {std::string(), std::string("not pem at all\n"),
                                     std::string("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}) {
        try {
            static_cast<void>(java_trust_store(bundle));
            ADD_FAILURE() << "accepted: " << bundle;
        } catch (const std::runtime_error& error) {
            EXPECT_NE(std::string(error.what()).find("cannot write the Java trust store"), std::string::npos)
                << error.what();
        }
    }
}

}  // namespace
}  // namespace tameflare::proxy
