#include "tests/support/test_ca.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <stdexcept>

namespace tameflare::testing {

namespace fs = std::filesystem;
using proxy::BioPtr;
using proxy::EvpPkeyPtr;
using proxy::OpenSslDeleter;
using proxy::X509Ptr;

namespace {

constexpr long kCaDays = 365;
constexpr long kLeafDays = 30;

[[noreturn]] void fail(const std::string& what) {
    char text[256] = "unknown OpenSSL error";
    if (const unsigned long code = ERR_get_error(); code != 0) ERR_error_string_n(code, text, sizeof text);
    ERR_clear_error();
    throw std::runtime_error("TestCa: " + what + ": " + text);
}

EvpPkeyPtr new_key() {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate a P-256 key");
    return key;
}

void add_extension(X509* certificate, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION, X509_EXTENSION_free>> extension(
        X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
    if (!extension || X509_add_ext(certificate, extension.get(), -1) != 1) {
        fail(std::string("cannot add ") + OBJ_nid2sn(nid) + "=" + value);
    }
}

// An unsigned certificate for `key` named `common_name`, valid from an hour ago.
X509Ptr new_certificate(EVP_PKEY* key, const std::string& common_name, long days) {
    X509Ptr certificate(X509_new());
    if (!certificate || X509_set_version(certificate.get(), 2) != 1) fail("cannot create a certificate");
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) fail("cannot draw a serial number");
    serial[0] &= 0x7f;
    std::unique_ptr<BIGNUM, OpenSslDeleter<BIGNUM, BN_free>> number(BN_bin2bn(serial, sizeof serial, nullptr));
    if (!number || !BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(certificate.get()))) fail("bad serial");
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), days * 24 * 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(certificate.get()), "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
    if (X509_set_pubkey(certificate.get(), key) != 1) fail("cannot set the public key");
    return certificate;
}

void write_pem(const fs::path& path, X509* certificate, EVP_PKEY* key) {
    BioPtr bio(BIO_new_file(path.c_str(), "w"));
    if (!bio) fail("cannot create " + path.string());
    const bool written = certificate != nullptr
                             ? PEM_write_bio_X509(bio.get(), certificate) == 1
                             : PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    if (!written || BIO_flush(bio.get()) != 1) fail("cannot write " + path.string());
}

// A leaf for the names, signed by `issuer_key` (and named after `issuer`, or
// after itself when `issuer` is null), written as `stem`.crt and `stem`.key.
LeafFiles write_leaf(const std::vector<std::string>& dns_names, const std::vector<std::string>& ips,
                     const fs::path& dir, const std::string& stem, X509* issuer, EVP_PKEY* issuer_key) {
    if (dns_names.empty() && ips.empty()) throw std::invalid_argument("TestCa: a leaf needs a DNS name or an IP");
    EvpPkeyPtr key = new_key();
    X509Ptr leaf = new_certificate(key.get(), dns_names.empty() ? ips.front() : dns_names.front(), kLeafDays);
    X509* signer = issuer != nullptr ? issuer : leaf.get();
    X509_set_issuer_name(leaf.get(), X509_get_subject_name(signer));
    std::string san;
    for (const auto& name : dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + name;
    for (const auto& ip : ips) san += (san.empty() ? "IP:" : ",IP:") + ip;
    add_extension(leaf.get(), signer, NID_subject_alt_name, san);
    add_extension(leaf.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(leaf.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_extension(leaf.get(), signer, NID_ext_key_usage, "serverAuth");
    add_extension(leaf.get(), signer, NID_subject_key_identifier, "hash");
    if (issuer != nullptr) add_extension(leaf.get(), issuer, NID_authority_key_identifier, "keyid:always");
    if (X509_sign(leaf.get(), issuer_key != nullptr ? issuer_key : key.get(), EVP_sha256()) == 0) {
        fail("cannot sign the leaf");
    }
    fs::create_directories(dir);
    LeafFiles files{dir / (stem + ".crt"), dir / (stem + ".key")};
    write_pem(files.cert_file, leaf.get(), nullptr);
    { std::ofstream create(files.key_file); }  // made private before the key goes in
    fs::permissions(files.key_file, fs::perms::owner_read | fs::perms::owner_write);
    write_pem(files.key_file, nullptr, key.get());
    return files;
}

}  // namespace

TestCa::TestCa(const fs::path& dir) : key_(new_key()), ca_file_(dir / "ca.crt") {
    certificate_ = new_certificate(key_.get(), "TameFlare Test Upstream CA", kCaDays);
    X509* ca = certificate_.get();
    X509_set_issuer_name(ca, X509_get_subject_name(ca));
    add_extension(ca, ca, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign");
    add_extension(ca, ca, NID_subject_key_identifier, "hash");
    if (X509_sign(ca, key_.get(), EVP_sha256()) == 0) fail("cannot sign the CA");
    fs::create_directories(dir);
    write_pem(ca_file_, ca, nullptr);
}

LeafFiles TestCa::issue(std::vector<std::string> dns_names, std::vector<std::string> ips, const fs::path& dir,
                        std::string stem) const {
    return write_leaf(dns_names, ips, dir, stem, certificate_.get(), key_.get());
}

LeafFiles TestCa::self_signed(std::vector<std::string> dns_names, std::vector<std::string> ips, const fs::path& dir,
                              std::string stem) {
    return write_leaf(dns_names, ips, dir, stem, nullptr, nullptr);
}

}  // namespace tameflare::testing
