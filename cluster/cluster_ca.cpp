#include "cluster/cluster_ca.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "common/error.h"

namespace keel::cluster {

namespace {

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO_free>>;
using Extension = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreContext = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;

// OpenSSL's last error, for a message.
std::string ssl_error() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no detail";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + ssl_error());
}

Key new_key() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) fail("cannot make an EC P-256 key");
  return key;
}

Bio memory_bio(const std::string& text) {
  Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) fail("out of memory");
  return bio;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string key_pem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    fail("cannot write a key");
  }
  return bio_text(bio.get());
}

std::string cert_pem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), cert)) fail("cannot write a certificate");
  return bio_text(bio.get());
}

Cert read_cert(const std::string& pem, const std::string& what) {
  auto bio = memory_bio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert) throw InputError(what + " holds no PEM certificate");
  return cert;
}

Key read_key(const std::string& pem, const std::string& what) {
  auto bio = memory_bio(pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) throw InputError(what + " holds no PEM private key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  Extension ext(X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) fail("cannot add extension " + value);
}

// A certificate for `key` named `name`, not yet signed; `issuer` null: the
// certificate issues itself.
Cert new_cert(EVP_PKEY* key, const std::string& name, X509* issuer, int years) {
  Cert cert(X509_new());
  if (!cert) fail("out of memory");
  if (!X509_set_version(cert.get(), X509_VERSION_3)) fail("cannot make a certificate");
  // A random 127-bit serial (positive): RFC 5280 4.1.2.2.
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) fail("no random bytes");
  serial[0] &= 0x7f;
  std::unique_ptr<BIGNUM, Deleter<BN_free>> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) {
    fail("cannot set a serial number");
  }
  // Valid from a day ago: hosts' clocks differ, and a host joining with a
  // clock behind the CA's would find it not valid yet.
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), years * 365, 0, nullptr)) {
    fail("cannot set a certificate's validity");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (!X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>("Keel"), -1, -1, 0) ||
      !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1,
                                  0)) {
    fail("cannot name a certificate '" + name + "'");
  }
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject);
  if (!X509_set_pubkey(cert.get(), key)) fail("cannot set a certificate's key");
  return cert;
}

void sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) == 0) fail("cannot sign a certificate");
}

}  // namespace

KeyAndCert make_cluster_ca(const std::string& cluster_name) {
  Key key = new_key();
  Cert cert = new_cert(key.get(), "Keel cluster " + cluster_name, nullptr, 20);
  add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  sign(cert.get(), key.get());
  return {key_pem(key.get()), cert_pem(cert.get())};
}

KeyAndCert issue_host_cert(const KeyAndCert& ca, const std::string& name,
                           const std::vector<std::string>& ips) {
  Cert ca_cert = read_cert(ca.cert_pem, "the cluster CA's certificate");
  Key ca_key = read_key(ca.key_pem, "the cluster CA's key");
  if (auto problem = key_problem(ca.key_pem, ca.cert_pem); !problem.empty()) {
    throw InputError("the cluster CA: " + problem);
  }
  std::string names;
  for (const auto& ip : ips) {
    unsigned char buf[16];
    if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
      throw InputError("'" + ip + "' is not an IP address (a host certificate's address)");
    }
    names += (names.empty() ? "" : ",") + std::string("IP:") + ip;
  }
  if (names.empty()) throw InputError("a host certificate needs an address");
  Key key = new_key();
  Cert cert = new_cert(key.get(), name, ca_cert.get(), 10);
  add_extension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), ca_cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  add_extension(cert.get(), ca_cert.get(), NID_subject_alt_name, names);
  add_extension(cert.get(), ca_cert.get(), NID_subject_key_identifier, "hash");
  add_extension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid,issuer");
  sign(cert.get(), ca_key.get());
  return {key_pem(key.get()), cert_pem(cert.get())};
}

std::string only_ca_cert(const std::string& pem) {
  size_t begins = 0;
  for (size_t at = pem.find("-----BEGIN"); at != std::string::npos;
       at = pem.find("-----BEGIN", at + 1)) {
    ++begins;
  }
  if (begins != 1) {
    throw InputError("a CA certificate is one PEM certificate (found " + std::to_string(begins) +
                     " PEM blocks)");
  }
  Cert cert = read_cert(pem, "the CA certificate");
  if (X509_check_ca(cert.get()) == 0) throw InputError("the certificate is not a CA's");
  Key key(X509_get_pubkey(cert.get()));
  if (!key || X509_verify(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    throw InputError("the CA certificate is not signed by its own key");
  }
  return cert_pem(cert.get());
}

std::string cert_fingerprint(const std::string& pem) {
  Cert cert = read_cert(pem, "the text");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!X509_digest(cert.get(), EVP_sha256(), digest, &n)) fail("cannot hash a certificate");
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

std::string cert_problem(const std::string& pem, const std::string& ca_pem) {
  try {
    Cert cert = read_cert(pem, "the certificate");
    Cert ca = read_cert(ca_pem, "the CA certificate");
    Store store(X509_STORE_new());
    StoreContext context(X509_STORE_CTX_new());
    if (!store || !context || !X509_STORE_add_cert(store.get(), ca.get()) ||
        !X509_STORE_CTX_init(context.get(), store.get(), cert.get(), nullptr)) {
      return "cannot check it: " + ssl_error();
    }
    if (X509_verify_cert(context.get()) == 1) return "";
    return X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get()));
  } catch (const InputError& e) {
    return e.what();
  }
}

std::string key_problem(const std::string& key_pem, const std::string& pem) {
  try {
    Key key = read_key(key_pem, "the key");
    Cert cert = read_cert(pem, "the certificate");
    if (X509_check_private_key(cert.get(), key.get()) == 1) return "";
    ERR_clear_error();
    return "the key is not the certificate's";
  } catch (const InputError& e) {
    return e.what();
  }
}

}  // namespace keel::cluster
