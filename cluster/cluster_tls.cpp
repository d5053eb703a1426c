#include "cluster/cluster_tls.h"

#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/unique_fd.h"

namespace keel::cluster {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTokenPrefix = "keel1.";

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(bytes)) != 1) {
    throw std::runtime_error("no random bytes for the join secret");
  }
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buf) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

bool is_hex(const std::string& s, size_t n) {
  return s.size() == n && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// Why `tls` cannot serve host `name`, or empty.
std::string tls_problem(const ClusterTls& tls) {
  if (auto p = key_problem(tls.ca.key_pem, tls.ca.cert_pem); !p.empty()) return "the CA: " + p;
  if (auto p = cert_problem(tls.host.cert_pem, tls.ca.cert_pem); !p.empty()) {
    return "the host's certificate: " + p;
  }
  if (auto p = key_problem(tls.host.key_pem, tls.host.cert_pem); !p.empty()) {
    return "the host's certificate: " + p;
  }
  if (!is_hex(tls.join_secret, 32)) return "the join secret is not 32 hex digits";
  return "";
}

// A new file, mode 0600 from its creation, written and synced.
void write_private(const fs::path& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) throw_errno("cannot create " + path.string());
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot write " + path.string());
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) throw_errno("cannot write " + path.string());
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw InputError("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

ClusterTls ClusterTls::create(const std::string& cluster_id, const std::string& host_name,
                              const std::vector<std::string>& ips) {
  ClusterTls tls;
  tls.ca = make_cluster_ca(cluster_id);
  tls.join_secret = random_hex(16);
  tls.host = issue_host_cert(tls.ca, host_name, ips);
  return tls;
}

ClusterTls ClusterTls::joined(KeyAndCert ca, std::string join_secret, const std::string& host_name,
                              const std::vector<std::string>& ips) {
  if (auto p = key_problem(ca.key_pem, ca.cert_pem); !p.empty()) {
    throw InputError("the peer handed over a broken cluster CA: " + p);
  }
  ClusterTls tls;
  tls.ca = std::move(ca);
  tls.join_secret = std::move(join_secret);
  tls.host = issue_host_cert(tls.ca, host_name, ips);
  if (auto p = tls_problem(tls); !p.empty()) throw InputError("the peer's TLS material: " + p);
  return tls;
}

void ClusterTls::reissue(const std::string& host_name, const std::vector<std::string>& ips) {
  host = issue_host_cert(ca, host_name, ips);
}

std::optional<ClusterTls> ClusterTls::load(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d / "ca.crt")) return std::nullopt;
  ClusterTls tls;
  tls.ca.cert_pem = read_all(d / "ca.crt");
  tls.ca.key_pem = read_all(d / "ca.key");
  tls.host.cert_pem = read_all(d / "host.crt");
  tls.host.key_pem = read_all(d / "host.key");
  tls.join_secret = read_all(d / "join.secret");
  while (!tls.join_secret.empty() && tls.join_secret.back() == '\n') tls.join_secret.pop_back();
  if (auto p = tls_problem(tls); !p.empty()) throw InputError(dir + ": " + p);
  return tls;
}

void ClusterTls::save(const std::string& dir) const {
  // Written whole into DIR.new, then swapped with DIR in one rename: a crash
  // leaves the old set or the new one, never a key of one and a
  // certificate of the other.
  const fs::path d(dir);
  fs::path fresh = d;
  fresh += ".new";
  fs::remove_all(fresh);
  fs::create_directories(fresh);
  ::chmod(fresh.c_str(), 0700);
  write_private(fresh / "host.key", host.key_pem);
  write_private(fresh / "host.crt", host.cert_pem);
  write_private(fresh / "join.secret", join_secret + "\n");
  write_private(fresh / "ca.key", ca.key_pem);
  write_private(fresh / "ca.crt", ca.cert_pem);
  if (fs::exists(d)) {
    if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, d.c_str(), RENAME_EXCHANGE) != 0) {
      throw_errno("cannot swap " + fresh.string() + " with " + dir);
    }
    fs::remove_all(fresh);  // the old set now
  } else if (::rename(fresh.c_str(), d.c_str()) != 0) {
    throw_errno("cannot rename " + fresh.string() + " to " + dir);
  }
}

std::string ClusterTls::join_token() const {
  return kTokenPrefix + join_secret + "." + cert_fingerprint(ca.cert_pem);
}

std::vector<std::string> host_cert_ips(const std::string& cluster_address) {
  if (cluster_address == "127.0.0.1") return {cluster_address};
  return {cluster_address, "127.0.0.1"};
}

JoinToken parse_join_token(const std::string& text) {
  const std::string prefix = kTokenPrefix;
  const auto dot = text.find('.', prefix.size());
  if (text.compare(0, prefix.size(), prefix) != 0 || dot == std::string::npos) {
    throw InputError(
        "--token: not a join token (keelctl cluster token on a host of the "
        "cluster prints it: keel1.SECRET.FINGERPRINT)");
  }
  JoinToken token{text.substr(prefix.size(), dot - prefix.size()), text.substr(dot + 1)};
  if (!is_hex(token.secret, 32) || !is_hex(token.ca_fingerprint, 64)) {
    throw InputError(
        "--token: damaged (keel1. then 32 and 64 hex digits; copy it whole from "
        "keelctl cluster token)");
  }
  return token;
}

bool same_secret(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

ChannelTls peer_channel(const ClusterTls& tls) {
  ChannelTls out;
  out.enabled = true;
  out.ca_cert = tls.ca.cert_pem;
  out.cert = tls.host.cert_pem;
  out.key = tls.host.key_pem;
  return out;
}

ChannelTls etcd_channel(const ClusterTls& tls) {
  // One channel balances over several members, so no one address can be
  // checked: every host's certificate names 127.0.0.1 (host_cert_ips), so
  // checking that name checks the member holds a certificate of the
  // cluster's CA.
  ChannelTls out = peer_channel(tls);
  out.server_name = "127.0.0.1";
  return out;
}

namespace {

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ChannelTls& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  if (tls.ca_cert.empty()) {
    // Encrypted, the server not checked: only for reading the CA it claims,
    // which the caller then compares with the join token's fingerprint.
    grpc::experimental::TlsChannelCredentialsOptions options;
    options.set_verify_server_certs(false);
    options.set_check_call_host(false);
    options.set_certificate_verifier(
        std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
    return grpc::experimental::TlsCredentials(options);
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_cert;
  options.pem_private_key = tls.key;
  options.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(options);
}

}  // namespace

std::shared_ptr<grpc::Channel> new_channel(const std::string& target, const ChannelTls& tls,
                                           grpc::ChannelArguments args) {
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(target, channel_credentials(tls), args);
}

std::shared_ptr<grpc::ServerCredentials> peer_server_credentials(const ClusterTls& tls) {
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls.ca.cert_pem;
  options.pem_key_cert_pairs.push_back({tls.host.key_pem, tls.host.cert_pem});
  return grpc::SslServerCredentials(options);
}

}  // namespace keel::cluster
