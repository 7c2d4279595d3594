#include "daemon/proxy/certificate_authority.h"

#include "common/atomic_file.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tameflare::proxy {

namespace fs = std::filesystem;

namespace {

constexpr long kCaDays = 3650;
constexpr long kLeafDays = 30;
constexpr const char* kKeyFile = "ca.key";
constexpr const char* kCertFile = "ca.crt";

std::string openssl_error() {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return "unknown OpenSSL error";
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    return text;
}

[[noreturn]] void fail(const std::string& what) {
    throw CaError(what + ": " + openssl_error());
}

EvpPkeyPtr new_p256_key() {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate an ECDSA P-256 key");
    return key;
}

void set_random_serial(X509* certificate) {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1) fail("cannot draw a certificate serial number");
    bytes[0] &= 0x7f;  // positive
    std::unique_ptr<BIGNUM, OpenSslDeleter<BIGNUM, BN_free>> number(BN_bin2bn(bytes, sizeof bytes, nullptr));
    if (!number || !BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(certificate))) fail("cannot set serial");
}

void add_extension(X509* certificate, X509* issuer, int nid, const char* value) {
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION, X509_EXTENSION_free>> extension(
        X509V3_EXT_conf_nid(nullptr, &context, nid, value));
    if (!extension || X509_add_ext(certificate, extension.get(), -1) != 1) {
        fail(std::string("cannot add certificate extension ") + OBJ_nid2sn(nid) + "=" + value);
    }
}

X509Ptr new_certificate(EVP_PKEY* key, const std::string& common_name, long days) {
    X509Ptr certificate(X509_new());
    if (!certificate || X509_set_version(certificate.get(), 2) != 1) fail("cannot create a certificate");
    set_random_serial(certificate.get());
    // An hour of slack for clocks that are a little behind.
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), days * 24 * 3600);
    X509_NAME* name = X509_get_subject_name(certificate.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("TameFlare"), -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                               -1, -1, 0);
    if (X509_set_pubkey(certificate.get(), key) != 1) fail("cannot set the certificate's key");
    return certificate;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw CaError("cannot read " + path.string() + ": " + std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// Writes `text` to `path` with `mode`, whole or not at all.
void write_file(const fs::path& path, const std::string& text, mode_t mode) {
    try {
        write_file_atomically(path, text, {.mode = mode, .take_over_temporary = true});
    } catch (const FileError& error) {
        throw CaError(std::string("cannot write ") + path.string() + ": " + error.what());
    }
}

std::string to_pem(X509* certificate) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1) fail("cannot encode the certificate");
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(size));
}

bool is_ip_literal(const std::string& name) {
    unsigned char buffer[16];
    return inet_pton(AF_INET, name.c_str(), buffer) == 1 || inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

}  // namespace

CertificateAuthority::CertificateAuthority(EvpPkeyPtr key, X509Ptr certificate, std::size_t cache_size)
    : key_(std::move(key)),
      certificate_(std::move(certificate)),
      leaves_(
          new_p256_key(),
          [this](const std::string& server_name, EVP_PKEY* subject) { return mint(server_name, subject); },
          cache_size) {}

EvpPkeyPtr new_leaf_key() {
    return new_p256_key();
}

std::unique_ptr<CertificateAuthority> CertificateAuthority::load_or_create(const fs::path& directory,
                                                                           std::size_t cache_size) {
    const fs::path key_path = directory / kKeyFile;
    const fs::path cert_path = directory / kCertFile;
    std::error_code ec;
    const bool has_key = fs::exists(key_path, ec);
    const bool has_cert = fs::exists(cert_path, ec);
    if (has_key != has_cert) {
        throw CaError((has_key ? cert_path : key_path).string() + " is missing but " +
                      (has_key ? key_path : cert_path).string() +
                      " exists; restore the missing file, or remove both to create a new CA (agents must then "
                      "trust the new ca.crt)");
    }
    if (!has_key) {
        fs::create_directories(directory, ec);
        if (ec) throw CaError("cannot create " + directory.string() + ": " + ec.message());
        EvpPkeyPtr key = new_p256_key();
        char host[256] = "localhost";
        ::gethostname(host, sizeof host - 1);
        X509Ptr certificate = new_certificate(key.get(), std::string("TameFlare local CA on ") + host, kCaDays);
        X509_set_issuer_name(certificate.get(), X509_get_subject_name(certificate.get()));
        add_extension(certificate.get(), certificate.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        add_extension(certificate.get(), certificate.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
        add_extension(certificate.get(), certificate.get(), NID_subject_key_identifier, "hash");
        if (X509_sign(certificate.get(), key.get(), EVP_sha256()) == 0) fail("cannot sign the CA certificate");
        BioPtr bio(BIO_new(BIO_s_mem()));
        if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
            fail("cannot encode the CA key");
        }
        char* data = nullptr;
        const long size = BIO_get_mem_data(bio.get(), &data);
        std::string key_pem(data, static_cast<std::size_t>(size));
        write_file(key_path, key_pem, 0600);
        OPENSSL_cleanse(key_pem.data(), key_pem.size());
        write_file(cert_path, to_pem(certificate.get()), 0644);
        return std::unique_ptr<CertificateAuthority>(
            new CertificateAuthority(std::move(key), std::move(certificate), cache_size));
    }

    struct stat status {};
    if (::stat(key_path.c_str(), &status) != 0) {
        throw CaError("cannot stat " + key_path.string() + ": " + std::strerror(errno));
    }
    if ((status.st_mode & 077) != 0) {
        std::ostringstream mode;
        mode << std::oct << (status.st_mode & 0777);
        throw CaError(key_path.string() + " is readable or writable by others (mode " + mode.str() +
                      "); run `chmod 600 " + key_path.string() + "` and consider who could have read it");
    }
    std::string key_pem = read_file(key_path);
    BioPtr key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    OPENSSL_cleanse(key_pem.data(), key_pem.size());
    if (!key) throw CaError(key_path.string() + " is not a PEM private key (" + openssl_error() + ")");
    const std::string cert_pem = read_file(cert_path);
    BioPtr cert_bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
    X509Ptr certificate(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    if (!certificate) throw CaError(cert_path.string() + " is not a PEM certificate (" + openssl_error() + ")");
    if (X509_check_private_key(certificate.get(), key.get()) != 1) {
        ERR_clear_error();
        throw CaError(key_path.string() + " is not the key of " + cert_path.string() +
                      "; restore the matching pair, or remove both to create a new CA");
    }
    return std::unique_ptr<CertificateAuthority>(
        new CertificateAuthority(std::move(key), std::move(certificate), cache_size));
}

X509Ptr CertificateAuthority::mint(const std::string& server_name, EVP_PKEY* subject) const {
    X509Ptr leaf = new_certificate(subject, server_name.substr(0, 64), kLeafDays);
    X509_set_issuer_name(leaf.get(), X509_get_subject_name(certificate_.get()));
    const std::string san = (is_ip_literal(server_name) ? "IP:" : "DNS:") + server_name;
    add_extension(leaf.get(), certificate_.get(), NID_subject_alt_name, san.c_str());
    add_extension(leaf.get(), certificate_.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_extension(leaf.get(), certificate_.get(), NID_key_usage, "critical,digitalSignature");
    add_extension(leaf.get(), certificate_.get(), NID_ext_key_usage, "serverAuth");
    add_extension(leaf.get(), certificate_.get(), NID_authority_key_identifier, "keyid:always");
    if (X509_sign(leaf.get(), key_.get(), EVP_sha256()) == 0) fail("cannot sign a leaf certificate");
    return leaf;
}

std::shared_ptr<const LeafCertificate> CertificateAuthority::leaf_for(std::string_view server_name) {
    return leaves_.leaf_for(server_name);
}

X509Ptr CertificateAuthority::sign_leaf(std::string_view server_name, EVP_PKEY* subject) const {
    const bool name_like =
        !server_name.empty() && server_name.size() <= 253 &&
        std::all_of(server_name.begin(), server_name.end(), [](char c) {
            const auto byte = static_cast<unsigned char>(c);
            return std::isalnum(byte) != 0 || c == '.' || c == '-' || c == '_' || c == ':' || c == '*';
        });
    if (!name_like) throw CaError("no certificate for a server name that no server has");
    if (subject == nullptr) throw CaError("no public key to certify");
    return mint(std::string(server_name), subject);
}

LeafCache::LeafCache(EvpPkeyPtr key, Mint mint, std::size_t size)
    : key_(std::move(key)), mint_(std::move(mint)), size_(size == 0 ? 1 : size) {}

std::shared_ptr<const LeafCertificate> LeafCache::leaf_for(std::string_view server_name) {
    std::string name(server_name);
    {
        const std::lock_guard lock(mutex_);
        if (const auto it = index_.find(name); it != index_.end()) {
            lru_.splice(lru_.begin(), lru_, it->second);
            return it->second->second;
        }
    }
    // Sign outside the lock; two threads minting the same name is harmless.
    X509Ptr certificate = mint_(name, key_.get());
    EVP_PKEY_up_ref(key_.get());
    auto leaf = std::make_shared<LeafCertificate>(LeafCertificate{std::move(certificate), EvpPkeyPtr(key_.get())});
    const std::lock_guard lock(mutex_);
    ++minted_;
    if (const auto it = index_.find(name); it != index_.end()) return it->second->second;
    lru_.emplace_front(name, leaf);
    index_.emplace(std::move(name), lru_.begin());
    while (lru_.size() > size_) {
        index_.erase(lru_.back().first);
        lru_.pop_back();
    }
    return leaf;
}

std::size_t LeafCache::cached() const {
    const std::lock_guard lock(mutex_);
    return lru_.size();
}

std::size_t LeafCache::minted() const {
    const std::lock_guard lock(mutex_);
    return minted_;
}

std::string CertificateAuthority::certificate_pem() const {
    return to_pem(certificate_.get());
}

std::size_t CertificateAuthority::cached() const {
    return leaves_.cached();
}

std::size_t CertificateAuthority::minted() const {
    return leaves_.minted();
}

}  // namespace tameflare::proxy
