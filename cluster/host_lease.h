// The lease that proves this host's agent is alive (DESIGN.md: self-fencing).
// /keel/alive/NAME is bound to it; the VMs' owner records will be too. When
// the lease cannot be renewed, the agent must stop its VMs before the lease
// can have expired on the majority's side, where other hosts may then start
// them:
//
// etcd extends a lease to (the moment its leader handles the keep-alive) +
// TTL, never earlier than our sending it; a new leader extends every lease
// further. So a lease renewed by a keep-alive sent at t lives at least until
// t + TTL on every member, and this host is fenced at t + TTL - margin.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "common/fence_deadline.h"

namespace keel::cluster {

struct HostLeaseSettings {
  std::string host;
  int64_t ttl_s = 4;
  std::chrono::milliseconds renew_every{1000};
  // Fenced this long before the earliest moment the lease may expire.
  std::chrono::milliseconds fence_margin{1500};
  // The /keel/alive/NAME record's value.
  std::string alive_record;
  // The host's fence deadline file (common/fence_deadline.h) its keel-vmm
  // processes watch: moved to the fence moment at each renewal, so that
  // they pause their guests then even if this agent is stuck or gone.
  // Empty: none.
  std::string fence_file;
};

class HostLease {
 public:
  struct Callbacks {
    // The lease may be gone soon: stop the VMs. Called on the lease's own
    // thread; must not block long.
    std::function<void()> fenced;
    // Renewed again after a fence (`same_lease`: false when the lease had
    // expired and a new one was granted).
    std::function<void(bool same_lease)> renewed;
  };
  // Grants the lease and registers at once (throws EtcdError when it
  // cannot), then renews it on its own thread until destroyed; destruction
  // revokes it (the host leaves the alive list at once).
  HostLease(const std::vector<std::string>& endpoints, HostLeaseSettings settings,
            Callbacks callbacks);
  ~HostLease();
  HostLease(const HostLease&) = delete;
  HostLease& operator=(const HostLease&) = delete;

  int64_t lease_id() const;
  bool fenced() const;
  // When this host was last fenced (Unix time, ms), 0: never.
  int64_t last_fenced_unix_ms() const;
  // Since the last keep-alive etcd confirmed (sent at that time).
  std::chrono::milliseconds since_renewal() const;

 private:
  void grant();
  void renew_loop();
  void fence_loop();
  // Under mutex_: fence_at_ becomes `at`, and the deadline file with it.
  void fence_at(std::chrono::steady_clock::time_point at);

  HostLeaseSettings settings_;
  Callbacks callbacks_;
  EtcdClient etcd_;
  std::optional<FenceDeadline> deadline_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  bool fenced_ = false;
  int64_t last_fenced_unix_ms_ = 0;
  int64_t lease_ = 0;
  std::chrono::steady_clock::time_point confirmed_at_;
  std::chrono::steady_clock::time_point fence_at_;
  std::thread renewer_;
  std::thread fencer_;
};

}  // namespace keel::cluster
