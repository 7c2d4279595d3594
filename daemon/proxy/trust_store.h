// The CA bundle as a Java trust store: a PKCS#12 file whose certificates are
// trusted entries (each carries the attribute Java's keytool writes,
// "Oracle trusted key usage" = anyExtendedKeyUsage; a certificate without
// it is ignored by Java's PKCS12 key store). JVMs (Maven, Gradle, any Java
// program) read no PEM bundle: agents and enforced units get
// -Djavax.net.ssl.trustStore pointing here through JAVA_TOOL_OPTIONS.
#pragma once

#include <string>
#include <string_view>

namespace tameflare::proxy {

// The password Java is given for the trust store: it protects nothing (the
// file is public), the MAC only guards against a damaged file. "changeit" is
// what Java's own cacerts uses.
inline constexpr std::string_view kTrustStorePassword = "changeit";

// The DER of a PKCS#12 trust store holding every certificate of
// `pem_bundle` (aliases "cert-1", "cert-2", ...), with a SHA-256 MAC under
// kTrustStorePassword. Throws std::runtime_error when the bundle holds no
// certificate or OpenSSL fails.
std::string java_trust_store(std::string_view pem_bundle);

// What an agent's JAVA_TOOL_OPTIONS says to use `store` (a path).
std::string java_trust_options(std::string_view store);

}  // namespace tameflare::proxy
