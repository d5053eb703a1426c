// The cluster's CA, host certificates, the join token, and the TLS files
// on disk (cluster/cluster_ca.h, cluster/cluster_tls.h).
#include "cluster/cluster_tls.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "cluster/cluster_ca.h"
#include "common/error.h"

namespace keel::cluster {
namespace {

namespace fs = std::filesystem;

TEST(ClusterCa, SignsHostCertificatesThatItAloneVerifies) {
  auto ca = make_cluster_ca("keel-1");
  EXPECT_EQ(key_problem(ca.key_pem, ca.cert_pem), "");
  auto host = issue_host_cert(ca, "h1", {"10.77.0.1", "127.0.0.1"});
  EXPECT_EQ(cert_problem(host.cert_pem, ca.cert_pem), "");
  EXPECT_EQ(key_problem(host.key_pem, host.cert_pem), "");
  EXPECT_NE(key_problem(ca.key_pem, host.cert_pem), "");
  auto other = make_cluster_ca("keel-2");
  EXPECT_NE(cert_problem(host.cert_pem, other.cert_pem), "");
  // A host certificate is no CA: what it signed is not the cluster's.
  auto forged = issue_host_cert({host.key_pem, host.cert_pem}, "h2", {"10.77.0.2"});
  EXPECT_NE(cert_problem(forged.cert_pem, ca.cert_pem), "");
  EXPECT_EQ(cert_fingerprint(ca.cert_pem).size(), 64u);
  EXPECT_NE(cert_fingerprint(ca.cert_pem), cert_fingerprint(other.cert_pem));
  EXPECT_EQ(cert_fingerprint(ca.cert_pem), cert_fingerprint(ca.cert_pem));
}

TEST(ClusterCa, OnlyOneSelfSignedCaPassesAsAPeersCa) {
  auto ca = make_cluster_ca("keel-1");
  auto other = make_cluster_ca("keel-2");
  const std::string only = only_ca_cert(ca.cert_pem);
  EXPECT_EQ(cert_fingerprint(only), cert_fingerprint(ca.cert_pem));
  // A second CA appended (it would be trusted without being hashed), a
  // host certificate, text around it, junk: refused.
  EXPECT_THROW(only_ca_cert(ca.cert_pem + other.cert_pem), InputError);
  EXPECT_THROW(only_ca_cert(ca.cert_pem + ca.key_pem), InputError);
  auto host = issue_host_cert(ca, "h1", {"10.77.0.1"});
  EXPECT_THROW(only_ca_cert(host.cert_pem), InputError);
  EXPECT_THROW(only_ca_cert(""), InputError);
  EXPECT_THROW(only_ca_cert("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
               InputError);
  EXPECT_EQ(only_ca_cert("junk before\n" + ca.cert_pem), only);
}

TEST(ClusterCa, RefusesJunk) {
  auto ca = make_cluster_ca("keel-1");
  EXPECT_THROW(issue_host_cert(ca, "h1", {"10.77.0"}), InputError);
  EXPECT_THROW(issue_host_cert(ca, "h1", {}), InputError);
  EXPECT_THROW(issue_host_cert({"junk", ca.cert_pem}, "h1", {"10.0.0.1"}), InputError);
  EXPECT_THROW(cert_fingerprint("-----BEGIN CERTIFICATE-----\nAAAA\n"), InputError);
  EXPECT_NE(cert_problem("", ca.cert_pem), "");
  EXPECT_NE(key_problem("", ca.cert_pem), "");
}

TEST(JoinToken, CarriesTheSecretAndTheCaFingerprint) {
  auto tls = ClusterTls::create("keel-1", "h1", host_cert_ips("10.77.0.1"));
  auto token = parse_join_token(tls.join_token());
  EXPECT_EQ(token.secret, tls.join_secret);
  EXPECT_EQ(token.ca_fingerprint, cert_fingerprint(tls.ca.cert_pem));
  EXPECT_TRUE(same_secret(token.secret, tls.join_secret));
  EXPECT_FALSE(same_secret(token.secret, std::string(32, '0')));
  EXPECT_FALSE(same_secret(token.secret, ""));
  for (std::string bad : {std::string(""), std::string("keel1."),
                          std::string("keel2.") + token.secret + "." + token.ca_fingerprint,
                          "keel1." + token.secret + token.ca_fingerprint,
                          "keel1." + token.secret + "." + token.ca_fingerprint + "0",
                          "keel1." + token.secret.substr(1) + "X." + token.ca_fingerprint}) {
    EXPECT_THROW(parse_join_token(bad), InputError) << bad;
  }
}

TEST(ClusterTlsFiles, SavedPrivatelyAndLoadedChecked) {
  const fs::path dir = fs::temp_directory_path() / ("keel-tls-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  EXPECT_FALSE(ClusterTls::load(dir.string()).has_value());
  auto tls = ClusterTls::create("keel-1", "h1", host_cert_ips("10.77.0.1"));
  tls.save(dir.string());
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir / "ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = ClusterTls::load(dir.string());
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->join_token(), tls.join_token());
  EXPECT_EQ(loaded->host.cert_pem, tls.host.cert_pem);
  // A new address: a new certificate, the whole set replaced at once.
  auto moved = tls;
  moved.reissue("h1", host_cert_ips("10.77.0.9"));
  moved.save(dir.string());
  EXPECT_EQ(ClusterTls::load(dir.string())->host.cert_pem, moved.host.cert_pem);
  EXPECT_FALSE(fs::exists(dir.string() + ".new"));
  tls.save(dir.string());
  // A joined host issues its own certificate with the CA it was handed.
  auto joined = ClusterTls::joined(tls.ca, tls.join_secret, "h2", host_cert_ips("10.77.0.2"));
  EXPECT_EQ(cert_problem(joined.host.cert_pem, tls.ca.cert_pem), "");
  EXPECT_THROW(ClusterTls::joined({"junk", tls.ca.cert_pem}, tls.join_secret, "h2",
                                  host_cert_ips("10.77.0.2")),
               InputError);
  // A host certificate of another CA, or a damaged file: refused by name.
  auto other = ClusterTls::create("keel-2", "h1", host_cert_ips("10.77.0.1"));
  std::ofstream(dir / "host.crt") << other.host.cert_pem;
  EXPECT_THROW(ClusterTls::load(dir.string()), InputError);
  std::ofstream(dir / "host.crt") << tls.host.cert_pem;
  std::ofstream(dir / "join.secret") << "short\n";
  EXPECT_THROW(ClusterTls::load(dir.string()), InputError);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace keel::cluster
