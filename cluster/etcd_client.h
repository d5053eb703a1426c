// The part of etcd's v3 API keel-agent uses (KV, leases, members, status),
// over gRPC (proto/etcd_rpc.proto), every call bounded by a deadline.
//
// Why gRPC rather than etcd's JSON gateway: the gateway is a translation in
// front of the same gRPC server (one more hop, and lease keep-alives and
// watches as chunked JSON streams to parse by hand); gRPC gives per-call
// deadlines, the keep-alive stream and one HTTP/2 connection per endpoint,
// and Debian ships libgrpc++.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/cluster_tls.h"
#include "proto/etcd_rpc.pb.h"

namespace keel::cluster {

// A failed call. unavailable(): the member did not answer, or answered that
// it cannot serve the request without a leader or a majority (no leader,
// timed out, deadline): the caller turns that into "no quorum".
class EtcdError : public std::runtime_error {
 public:
  EtcdError(int grpc_code, const std::string& message, bool unavailable)
      : std::runtime_error(message), grpc_code_(grpc_code), unavailable_(unavailable) {}
  int grpc_code() const { return grpc_code_; }
  bool unavailable() const { return unavailable_; }

 private:
  int grpc_code_;
  bool unavailable_;
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct Member {
  uint64_t id = 0;
  std::string name;  // empty until the member first started
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool learner = false;
};

// Linearizable reads go through the leader and need a majority;
// serializable ones are what the asked member has (possibly stale).
enum class Read { kLinearizable, kSerializable };

class EtcdClient {
 public:
  // `endpoints`: "ADDR:PORT" of members (tried in order: the first that
  // answers is used). `timeout`: each call's deadline.
  // `tls`: disabled for plaintext (an etcd the operator runs).
  EtcdClient(const std::vector<std::string>& endpoints, std::chrono::milliseconds timeout,
             const ChannelTls& tls);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  std::chrono::milliseconds timeout() const { return timeout_; }
  // Starts connecting now rather than at the first call.
  void connect();

  std::optional<KeyValue> get(const std::string& key, Read read = Read::kLinearizable);
  std::vector<KeyValue> list(const std::string& prefix, Read read = Read::kLinearizable);
  // The keys in [from, end), and the store's revision they were read at.
  struct Range {
    std::vector<KeyValue> kvs;
    int64_t revision = 0;
  };
  Range range(const std::string& from, const std::string& end, Read read = Read::kLinearizable);
  // Watches [from, end) from `start_revision` (inclusive) for at most
  // `limit`: `each` gets every key put, in revision order (deletes are
  // not told), and ends the watch by returning false. Throws EtcdError
  // (also when `start_revision` was compacted away).
  void watch(const std::string& from, const std::string& end, int64_t start_revision,
             std::chrono::milliseconds limit, const std::function<bool(const KeyValue&)>& each);
  void put(const std::string& key, const std::string& value, int64_t lease = 0);
  // How many keys went.
  int64_t erase(const std::string& key);
  etcdserverpb::TxnResponse txn(const etcdserverpb::TxnRequest& request);

  // Returns the lease's ID.
  int64_t grant_lease(int64_t ttl_s);
  // One renewal; the TTL the lease has now, 0 when it no longer exists.
  int64_t keep_alive(int64_t lease);
  void revoke_lease(int64_t lease);

  std::vector<Member> members();
  // The new member's ID, and the members as the answering one knows them.
  std::pair<uint64_t, std::vector<Member>> add_member(const std::string& peer_url, bool learner);
  void remove_member(uint64_t id);
  void update_member(uint64_t id, const std::string& peer_url);
  void promote_member(uint64_t id);
  // Maintenance.Status of the member this client talks to.
  etcdserverpb::StatusResponse status();

  // Helpers for transactions.
  static etcdserverpb::Compare key_absent(const std::string& key);
  static etcdserverpb::Compare key_version(const std::string& key, int64_t version);
  static etcdserverpb::Compare key_mod_revision(const std::string& key, int64_t revision);
  static etcdserverpb::RequestOp put_op(const std::string& key, const std::string& value,
                                        int64_t lease = 0);
  static etcdserverpb::RequestOp delete_op(const std::string& key);

  struct Stubs;

 private:
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Stubs> stubs_;
};

// "ADDR:PORT" from a member's URL ("https://ADDR:PORT").
std::string endpoint_of_url(const std::string& url);
// The end of the key range holding every key that starts with `prefix`.
std::string prefix_range_end(const std::string& prefix);

}  // namespace keel::cluster
