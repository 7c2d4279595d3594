#include "daemon/proxy/trust_store.h"

#include "daemon/proxy/openssl_handles.h"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <stdexcept>

namespace tameflare::proxy {
namespace {

// "Oracle JDK trusted key usage": the bag attribute that makes a certificate
// a trusted entry of a Java PKCS12 key store; its value, anyExtendedKeyUsage,
// trusts it for every purpose.
constexpr const char* kJavaTrustedKeyUsage = "2.16.840.1.113894.746875.1.1";
constexpr const char* kAnyExtendedKeyUsage = "2.5.29.37.0";

using Asn1ObjectPtr = std::unique_ptr<ASN1_OBJECT, OpenSslDeleter<ASN1_OBJECT, ASN1_OBJECT_free>>;
using Pkcs12Ptr = std::unique_ptr<PKCS12, OpenSslDeleter<PKCS12, PKCS12_free>>;

struct BagsDeleter {
    void operator()(STACK_OF(PKCS12_SAFEBAG) * bags) const { sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free); }
};
struct SafesDeleter {
    void operator()(STACK_OF(PKCS7) * safes) const { sk_PKCS7_pop_free(safes, PKCS7_free); }
};

[[noreturn]] void fail(const std::string& what) {
    const unsigned long code = ERR_get_error();
    std::string detail;
    if (code != 0) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        detail = std::string(": ") + text;
    }
    ERR_clear_error();
    throw std::runtime_error("cannot write the Java trust store: " + what + detail);
}

}  // namespace

std::string java_trust_store(std::string_view pem_bundle) {
    BioPtr in(BIO_new_mem_buf(pem_bundle.data(), static_cast<int>(pem_bundle.size())));
    const Asn1ObjectPtr any_usage(OBJ_txt2obj(kAnyExtendedKeyUsage, 1));
    if (!in || !any_usage) fail("out of memory");
    const std::unique_ptr<STACK_OF(PKCS12_SAFEBAG), BagsDeleter> bags(sk_PKCS12_SAFEBAG_new_null());
    if (!bags) fail("out of memory");
    int count = 0;
    for (;;) {
        X509Ptr certificate(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
        if (!certificate) break;
        STACK_OF(PKCS12_SAFEBAG)* stack = bags.get();  // not null: PKCS12_add_cert pushes onto it
        PKCS12_SAFEBAG* bag = PKCS12_add_cert(&stack, certificate.get());
        if (bag == nullptr) fail("adding a certificate");
        const std::string alias = "cert-" + std::to_string(++count);
        if (PKCS12_add_friendlyname_asc(bag, alias.c_str(), -1) != 1 ||
            PKCS12_add1_attr_by_txt(bag, kJavaTrustedKeyUsage, V_ASN1_OBJECT,
                                    reinterpret_cast<const unsigned char*>(any_usage.get()), -1) != 1) {
            fail("marking a certificate trusted");
        }
    }
    ERR_clear_error();  // the end of the PEM input reads as an error
    if (count == 0) throw std::runtime_error("cannot write the Java trust store: the CA bundle holds no certificate");
    STACK_OF(PKCS7)* raw_safes = nullptr;
    // -1: the certificates are public, so the safe is not encrypted.
    if (PKCS12_add_safe(&raw_safes, bags.get(), -1, 0, nullptr) != 1) fail("building the safe");
    const std::unique_ptr<STACK_OF(PKCS7), SafesDeleter> safes(raw_safes);
    const Pkcs12Ptr store(PKCS12_add_safes(safes.get(), 0));
    if (!store) fail("building the store");
    if (PKCS12_set_mac(store.get(), kTrustStorePassword.data(), static_cast<int>(kTrustStorePassword.size()), nullptr,
                       0, 10000, EVP_sha256()) != 1) {
        fail("computing the MAC");
    }
    unsigned char* der = nullptr;
    const int length = i2d_PKCS12(store.get(), &der);
    if (length <= 0) fail("encoding the store");
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    return out;
}

std::string java_trust_options(std::string_view store) {
    return "-Djavax.net.ssl.trustStore=" + std::string(store) +
           " -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=" +
           std::string(kTrustStorePassword);
}

}  // namespace tameflare::proxy
