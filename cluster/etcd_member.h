// The host's own etcd member, run and supervised by keel-agent: Debian's
// etcd-server with settings for a LAN (DESIGN.md: the cluster's state, leases
// and elections), restarted when it exits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"

namespace keel::cluster {

inline constexpr int kEtcdClientPort = 2379;
inline constexpr int kEtcdPeerPort = 2380;

struct EtcdMemberSettings {
  std::string name;      // the host's name, also the member's
  std::string address;   // the cluster address: peers and clients
  std::string data_dir;  // kept across restarts; etcd's own format
  // First start only (etcd ignores both once data_dir holds a member):
  // "NAME=https://ADDR:2380,..." and whether the cluster is new or existing.
  std::string initial_cluster;
  bool new_cluster = true;
  std::string cluster_token;  // --initial-cluster-token: tells clusters apart
  std::string log_file;       // etcd's own log; empty: this process's stderr
  // Raft timing for a LAN: a leader's heartbeat every 100 ms, an election
  // after 1 s without one (etcd's defaults are for WANs too: 100/1000 are
  // its defaults as well, kept here explicitly since fencing relies on them).
  std::chrono::milliseconds heartbeat{100};
  std::chrono::milliseconds election{1000};
  std::string etcd_binary = "etcd";
  // ca.crt, host.crt and host.key (cluster/cluster_tls.h): the member
  // serves clients and peers over TLS and admits only certificates of the
  // cluster's CA on both.
  std::string tls_dir;
};

// The command line the settings give (also for tests and the systemd unit).
std::vector<std::string> etcd_command_line(const EtcdMemberSettings& settings);

std::string peer_url(const std::string& address);    // https://ADDR:2380
std::string client_url(const std::string& address);  // https://ADDR:2379

// Starts etcd at once and restarts it (after 1 s, at most every 1 s) whenever
// it exits, until destroyed; destruction stops it (SIGTERM, SIGKILL after
// 5 s). Exits are logged with their code.
class EtcdMember {
 public:
  explicit EtcdMember(EtcdMemberSettings settings);
  ~EtcdMember();
  EtcdMember(const EtcdMember&) = delete;
  EtcdMember& operator=(const EtcdMember&) = delete;

  // The running process's PID, 0 between restarts.
  pid_t pid() const;
  unsigned restarts() const;

 private:
  void supervise();

  EtcdMemberSettings settings_;
  mutable std::mutex mutex_;
  std::condition_variable stop_requested_;
  bool stopping_ = false;
  std::optional<ChildProcess> child_;
  unsigned restarts_ = 0;
  std::thread supervisor_;
};

}  // namespace keel::cluster
