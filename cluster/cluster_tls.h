// A host's TLS material (STATE_DIR/tls, root only): the cluster's CA, the
// host's certificate, and the join secret, with the join token made of them;
// and the gRPC credentials the agent's peer API and etcd are used with.
//
// The join token is "keel1.SECRET.FINGERPRINT": the joining host checks
// that the peer's CA has FINGERPRINT before it sends anything (a peer
// without the CA cannot pass itself off as the cluster), and the peer admits
// only a host that sends SECRET.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/cluster_ca.h"

namespace keel::cluster {

struct ClusterTls {
  KeyAndCert ca;
  KeyAndCert host;
  std::string join_secret;  // 32 hex digits

  // A new cluster's: a new CA and secret, and the host's certificate.
  static ClusterTls create(const std::string& cluster_id, const std::string& host_name,
                           const std::vector<std::string>& ips);
  // A joining host's, from what its peer handed over (checked).
  static ClusterTls joined(KeyAndCert ca, std::string join_secret, const std::string& host_name,
                           const std::vector<std::string>& ips);
  // A new host certificate (its address changed).
  void reissue(const std::string& host_name, const std::vector<std::string>& ips);

  // nullopt when `dir` holds none; InputError when what it holds is damaged.
  static std::optional<ClusterTls> load(const std::string& dir);
  // Mode 0600 in a 0700 directory; the set replaces the old one at once
  // (written into DIR.new, then swapped with DIR).
  void save(const std::string& dir) const;

  std::string join_token() const;
};

// The addresses a host's certificate names: its cluster address, and
// 127.0.0.1 (the local etcd member is reached there).
std::vector<std::string> host_cert_ips(const std::string& cluster_address);

struct JoinToken {
  std::string secret;
  std::string ca_fingerprint;
};
// InputError naming what is wrong with `text`.
JoinToken parse_join_token(const std::string& text);
// Compared in constant time.
bool same_secret(const std::string& a, const std::string& b);

// How a client reaches an agent or etcd.
struct ChannelTls {
  bool enabled = false;   // false: plaintext (keelctl on the agent's Unix socket)
  std::string ca_cert;    // the server must hold a certificate of this CA;
                          // empty: not checked (a join's first look, see above)
  std::string cert, key;  // the client's certificate; empty: none
  // The name checked in the server's certificate instead of the address
  // dialled (a channel over several etcd members; see etcd_client.cpp).
  std::string server_name;
};
ChannelTls peer_channel(const ClusterTls& tls);
// The same for etcd: the server's name checked is 127.0.0.1, which every
// host's certificate carries (one channel may span several members).
ChannelTls etcd_channel(const ClusterTls& tls);

// A channel to `target` with `tls` (its credentials and server name).
std::shared_ptr<grpc::Channel> new_channel(const std::string& target, const ChannelTls& tls,
                                           grpc::ChannelArguments args);
// The agent's peer API: its certificate; clients may present one of the
// cluster's (checked when presented: each call then asks peer_is_host).
std::shared_ptr<grpc::ServerCredentials> peer_server_credentials(const ClusterTls& tls);

}  // namespace keel::cluster
