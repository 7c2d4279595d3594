// The interception CA: files on disk, leaves that verify, the cache, refusals
// of bad files, and curl trusting a leaf through the CA.
#include "daemon/proxy/certificate_authority.h"
#include "support/loopback.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <csignal>

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

namespace tameflare::proxy {
namespace {

namespace fs = std::filesystem;

class CaTest : public ::testing::Test {
protected:
    testing::TempDir temp_{"tf-ca"};
    const fs::path dir_ = temp_.path();
};

// Verifies `leaf` against the CA alone, for a host name or an IP literal.
bool verifies(const CertificateAuthority& ca, X509* leaf, const std::string& name, bool ip = false) {
    X509StorePtr store(X509_STORE_new());
    X509_STORE_add_cert(store.get(), ca.certificate());
    X509StoreCtxPtr context(X509_STORE_CTX_new());
    X509_STORE_CTX_init(context.get(), store.get(), leaf, nullptr);
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(context.get());
    if (ip) {
        X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    } else {
        X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
    }
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    return X509_verify_cert(context.get()) == 1;
}

mode_t mode_of(const fs::path& path) {
    struct stat status {};
    ::stat(path.c_str(), &status);
    return status.st_mode & 0777;
}

TEST_F(CaTest, IsCreatedOnFirstStartWithAPrivateKeyFile) {
    const auto ca = CertificateAuthority::load_or_create(dir_);
    EXPECT_EQ(mode_of(dir_ / "ca.key"), 0600U);
    EXPECT_EQ(mode_of(dir_ / "ca.crt"), 0644U);
    EXPECT_EQ(X509_check_ca(ca->certificate()), 1);
    EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(ca->certificate())), EVP_PKEY_EC);
    EXPECT_NE(ca->certificate_pem().find("BEGIN CERTIFICATE"), std::string::npos);
}

TEST_F(CaTest, IsLoadedAgainOnTheNextStart) {
    const auto first = CertificateAuthority::load_or_create(dir_);
    const auto second = CertificateAuthority::load_or_create(dir_);
    EXPECT_EQ(X509_cmp(first->certificate(), second->certificate()), 0);
    // A leaf minted after a restart still chains to the same CA.
    EXPECT_TRUE(verifies(*first, second->leaf_for("api.github.com")->certificate.get(), "api.github.com"));
}

TEST_F(CaTest, MintsLeavesThatVerifyForTheirNameOnly) {
    const auto ca = CertificateAuthority::load_or_create(dir_);
    const auto leaf = ca->leaf_for("api.github.com");
    EXPECT_TRUE(verifies(*ca, leaf->certificate.get(), "api.github.com"));
    EXPECT_FALSE(verifies(*ca, leaf->certificate.get(), "api.openai.com"));
    EXPECT_EQ(X509_check_private_key(leaf->certificate.get(), leaf->key.get()), 1);
    EXPECT_EQ(X509_check_ca(leaf->certificate.get()), 0);
}

TEST_F(CaTest, MintsIpAddressLeavesWithAnIpSubjectAltName) {
    const auto ca = CertificateAuthority::load_or_create(dir_);
    EXPECT_TRUE(verifies(*ca, ca->leaf_for("127.0.0.7")->certificate.get(), "127.0.0.7", true));
    EXPECT_TRUE(verifies(*ca, ca->leaf_for("::1")->certificate.get(), "::1", true));
    EXPECT_FALSE(verifies(*ca, ca->leaf_for("127.0.0.7")->certificate.get(), "127.0.0.8", true));
}

TEST_F(CaTest, ARepeatHandshakeCostsNoSigningAndTheCacheIsBounded) {
    const auto ca = CertificateAuthority::load_or_create(dir_, 2);
    const auto a = ca->leaf_for("a.example.com");
    EXPECT_EQ(ca->leaf_for("a.example.com"), a);
    EXPECT_EQ(ca->minted(), 1U);
    ca->leaf_for("b.example.com");
    ca->leaf_for("a.example.com");  // a is now the most recent
    ca->leaf_for("c.example.com");  // evicts b
    EXPECT_EQ(ca->cached(), 2U);
    EXPECT_EQ(ca->minted(), 3U);
    EXPECT_EQ(ca->leaf_for("a.example.com"), a);
    ca->leaf_for("b.example.com");
    EXPECT_EQ(ca->minted(), 4U);
    // A leaf handed out stays valid after its eviction from the cache.
    const auto kept = ca->leaf_for("d.example.com");
    for (const char* name : {"e.example.com", "f.example.com", "g.example.com"}) ca->leaf_for(name);
    EXPECT_EQ(X509_check_private_key(kept->certificate.get(), kept->key.get()), 1);
}

TEST_F(CaTest, SignsALeafOverAnotherProcesssKeyWithoutEverHoldingIt) {
    // The data plane's side (issue 24): its own key and cache, the CA's signature.
    const auto ca = CertificateAuthority::load_or_create(dir_);
    std::size_t asked = 0;
    LeafCache remote(
        new_leaf_key(),
        [&](const std::string& name, EVP_PKEY* key) {
            ++asked;
            return ca->sign_leaf(name, key);
        },
        8);
    const auto leaf = remote.leaf_for("api.github.com");
    EXPECT_TRUE(verifies(*ca, leaf->certificate.get(), "api.github.com"));
    EXPECT_FALSE(verifies(*ca, leaf->certificate.get(), "api.openai.com"));
    // The certificate is for the data plane's key, not the CA's own leaf key.
    EXPECT_EQ(X509_check_private_key(leaf->certificate.get(), remote.key()), 1);
    EXPECT_NE(X509_check_private_key(leaf->certificate.get(), ca->leaf_for("api.github.com")->key.get()), 1);
    ERR_clear_error();
    EXPECT_EQ(remote.leaf_for("api.github.com"), leaf);
    EXPECT_EQ(asked, 1U);
    EXPECT_TRUE(verifies(*ca, remote.leaf_for("127.0.0.7")->certificate.get(), "127.0.0.7", true));
}

TEST_F(CaTest, SignsNoLeafForANameNoServerHas) {
    const auto ca = CertificateAuthority::load_or_create(dir_);
    const auto key = new_leaf_key();
    for (const std::string name : {std::string(), std::string("a b"), std::string("x\n.example.com"),
                                   std::string(300, 'a'), std::string("evil/..")}) {
        EXPECT_THROW(ca->sign_leaf(name, key.get()), CaError) << name;
    }
    EXPECT_THROW(ca->sign_leaf("api.github.com", nullptr), CaError);
    EXPECT_NO_THROW(ca->sign_leaf("*.example.com", key.get()));
}

TEST_F(CaTest, RefusesAKeyOthersCanRead) {
    CertificateAuthority::load_or_create(dir_);
    fs::permissions(dir_ / "ca.key", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    try {
        CertificateAuthority::load_or_create(dir_);
        FAIL() << "a group-readable key was accepted";
    } catch (const CaError& error) {
        EXPECT_NE(std::string(error.what()).find("chmod 600"), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find("mode 640"), std::string::npos) << error.what();
    }
}

TEST_F(CaTest, RefusesHalfAPairAndNeverOverwritesIt) {
    CertificateAuthority::load_or_create(dir_);
    const std::string key_before = [&] {
        std::ifstream in(dir_ / "ca.key");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    fs::remove(dir_ / "ca.crt");
    EXPECT_THROW(CertificateAuthority::load_or_create(dir_), CaError);
    std::ifstream in(dir_ / "ca.key");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), key_before);
    EXPECT_FALSE(fs::exists(dir_ / "ca.crt"));
}

TEST_F(CaTest, RefusesAKeyThatIsNotTheCertificatesOrIsNotPem) {
    const fs::path other = dir_ / "other";
    CertificateAuthority::load_or_create(dir_);
    CertificateAuthority::load_or_create(other);
    fs::copy_file(other / "ca.crt", dir_ / "ca.crt", fs::copy_options::overwrite_existing);
    try {
        CertificateAuthority::load_or_create(dir_);
        FAIL() << "a mismatched pair was accepted";
    } catch (const CaError& error) {
        EXPECT_NE(std::string(error.what()).find("is not the key of"), std::string::npos) << error.what();
    }
    std::ofstream(other / "ca.crt") << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    EXPECT_THROW(CertificateAuthority::load_or_create(other), CaError);
}

// A one-shot TLS server on loopback presenting the leaf for `name`.
class LeafServer {
public:
    LeafServer(CertificateAuthority& ca, const std::string& name) {
        // OpenSSL writes with write(2): a client that hung up must be an
        // error return, not a SIGPIPE that ends the test process.
        ::signal(SIGPIPE, SIG_IGN);
        const auto leaf = ca.leaf_for(name);
        ctx_.reset(SSL_CTX_new(TLS_server_method()));
        SSL_CTX_use_certificate(ctx_.get(), leaf->certificate.get());
        SSL_CTX_use_PrivateKey(ctx_.get(), leaf->key.get());
        thread_ = std::thread([this] { serve(); });
    }
    ~LeafServer() {
        listener_.shutdown();
        thread_.join();
    }
    [[nodiscard]] int port() const { return listener_.port(); }

private:
    void serve() {
        const int connection = listener_.accept();
        if (connection < 0) return;
        SslPtr ssl(SSL_new(ctx_.get()));
        SSL_set_fd(ssl.get(), connection);
        if (SSL_accept(ssl.get()) == 1) {
            char request[4096];
            SSL_read(ssl.get(), request, sizeof request);
            const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            SSL_write(ssl.get(), response.data(), static_cast<int>(response.size()));
            SSL_shutdown(ssl.get());
        }
        ::close(connection);
    }
    testing::LoopbackListener listener_;
    SslCtxPtr ctx_;
    std::thread thread_;
};

TEST_F(CaTest, CurlTrustsALeafThroughTheCaAndOnlyForItsName) {
    const auto ca = CertificateAuthority::load_or_create(dir_);
    const std::string cacert = (dir_ / "ca.crt").string();
    {
        LeafServer server(*ca, "api.github.com");
        const std::string port = std::to_string(server.port());
        const auto good = testing::run({"/usr/bin/curl", "--silent", "--show-error", "--max-time", "10", "--cacert",
                                        cacert, "--resolve", "api.github.com:" + port + ":127.0.0.1",
                                        "https://api.github.com:" + port + "/zen"});
        EXPECT_EQ(good.status, 0) << good.err;
        EXPECT_EQ(good.out, "ok");
    }
    {
        LeafServer server(*ca, "api.github.com");
        const std::string port = std::to_string(server.port());
        const auto wrong =
            testing::run({"/usr/bin/curl", "--silent", "--max-time", "10", "--cacert", cacert, "--resolve",
                          "evil.example.com:" + port + ":127.0.0.1", "https://evil.example.com:" + port + "/"});
        EXPECT_EQ(wrong.status, 60);  // curl: peer certificate cannot be authenticated
    }
}

}  // namespace
}  // namespace tameflare::proxy
