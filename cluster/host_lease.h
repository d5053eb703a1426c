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
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/etcd_client.h"
#include "common/fence_deadline.h"

namespace keel::cluster {

struct HostLeaseSettings {
  std::string host;
  int64_t ttl_s = 4;
  std::chrono::milliseconds renew_every{1000};
  // After a failed renewal: tried again this soon, so that a new etcd
  // leader (elected in 1-2 s after the old one died) confirms the lease
  // before the fence, rather than a whole renew_every later.
  std::chrono::milliseconds retry_every{100};
  // Fenced this long before the earliest moment the lease may expire.
  std::chrono::milliseconds fence_margin{1500};
  // The /keel/alive/NAME record's value.
  std::string alive_record;
  // The host's fence deadline file (common/fence_deadline.h) its keel-vmm
  // processes watch: moved to the fence moment at each renewal, so that
  // they pause their guests then even if this agent is stuck or gone.
  // Empty: none.
  std::string fence_file;
  // The lease a previous process of this agent held (0: none): renewed
  // and kept if it is still alive, so that what is bound to it (the host's
  // VMs' owner records) stays valid across a restart of the agent.
  int64_t resume_lease = 0;
};

class HostLease {
 public:
  struct Callbacks {
    // The lease may be gone soon: stop the VMs. Called on the lease's own
    // thread; must not block long.
    std::function<void()> fenced;
    // Renewed again after a fence, or a new lease granted (`same_lease`
    // false: the old one had expired).
    std::function<void(bool same_lease)> renewed;
  };
  // Takes the lease (settings.resume_lease when it is still alive, else a
  // new one) and registers at once (throws EtcdError when it cannot), then
  // renews it on its own thread until destroyed. Destruction leaves it to
  // expire (within its TTL): a restarting agent takes it up again, and its
  // VMs stay this host's meanwhile.
  HostLease(const std::vector<std::string>& endpoints, const ChannelTls& tls,
            HostLeaseSettings settings, Callbacks callbacks);
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
  // Takes up `lease` if it is alive; false if it is gone.
  bool take_up(int64_t lease);
  // /keel/alive/NAME bound to `lease`, confirmed by a call sent at `sent`
  // that left it `ttl_s` to live.
  void register_under(int64_t lease, std::chrono::steady_clock::time_point sent, int64_t ttl_s);
  void renew_loop();
  void fence_loop();
  // Under mutex_: fence_at_ becomes `at`, and the deadline file with it.
  void fence_at(std::chrono::steady_clock::time_point at);

  // `f(client)` on the member that answered last, then on the others in
  // turn while they cannot answer (EtcdError::unavailable); the renewer's
  // thread (and the constructor) only.
  template <class F>
  auto on_a_member(F f) -> decltype(f(std::declval<EtcdClient&>()));

  HostLeaseSettings settings_;
  Callbacks callbacks_;
  // One client per member, each with its own connection, kept up: when the
  // one in use dies or loses its leader, the next renewal goes to a
  // member already connected (with TLS, a new connection costs a
  // handshake, slow on a loaded host).
  std::vector<std::unique_ptr<EtcdClient>> members_;
  size_t preferred_ = 0;
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
