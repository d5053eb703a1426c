// The cluster's certificate authority: an EC P-256 key and a self-signed
// certificate made at `cluster init`, and the host certificates it signs.
// Every host holds the CA (it is handed over at join, over a channel the
// joiner checked against the token's fingerprint), so any member can admit
// the next host or re-issue its own certificate; a certificate the CA signed
// is what makes a peer a host of the cluster.
#pragma once

#include <string>
#include <vector>

namespace keel::cluster {

struct KeyAndCert {
  std::string key_pem;   // PKCS#8
  std::string cert_pem;  // X.509
};

// A new CA named after the cluster, valid for 20 years.
KeyAndCert make_cluster_ca(const std::string& cluster_name);

// A certificate for host `name` signed by `ca`, valid for 10 years, for the
// IP addresses `ips` (its subjectAltNames; TLS peers check them), usable as
// TLS server and client. InputError on a malformed address or CA.
KeyAndCert issue_host_cert(const KeyAndCert& ca, const std::string& name,
                           const std::vector<std::string>& ips);

// `pem` when it holds exactly one certificate, a CA that signed itself,
// re-encoded (nothing else of the text is kept); InputError otherwise. A
// peer's CA is passed through this before it is hashed or trusted: a second
// certificate appended would be trusted too without being hashed.
std::string only_ca_cert(const std::string& pem);

// SHA-256 of the certificate's DER encoding, 64 lowercase hex digits;
// InputError when `cert_pem` holds no certificate.
std::string cert_fingerprint(const std::string& cert_pem);

// Empty when `cert_pem` was signed by `ca_cert_pem` and is in its validity
// period, else why not.
std::string cert_problem(const std::string& cert_pem, const std::string& ca_cert_pem);

// Empty when `key_pem` is the private key of `cert_pem`, else why not.
std::string key_problem(const std::string& key_pem, const std::string& cert_pem);

}  // namespace keel::cluster
