#include "cluster/host_lease.h"

#include <algorithm>

#include "common/log.h"

namespace keel::cluster {

namespace {
constexpr const char* kAlivePrefix = "/keel/alive/";
}

HostLease::HostLease(const std::vector<std::string>& endpoints, const ChannelTls& tls,
                     HostLeaseSettings settings, Callbacks callbacks)
    : settings_(std::move(settings)), callbacks_(std::move(callbacks)) {
  for (const auto& endpoint : endpoints) {
    // Each renewal must come back well inside the fence margin.
    members_.push_back(std::make_unique<EtcdClient>(std::vector<std::string>{endpoint},
                                                    std::chrono::milliseconds(1000), tls));
    members_.back()->connect();
  }
  if (members_.empty()) throw std::logic_error("a host lease needs an etcd endpoint");
  // A restarted agent finds the deadline its predecessor left: it moves
  // only once this lease is confirmed.
  if (!settings_.fence_file.empty()) deadline_ = FenceDeadline::create(settings_.fence_file, 0);
  if (settings_.resume_lease == 0 || !take_up(settings_.resume_lease)) grant();
  renewer_ = std::thread([this] { renew_loop(); });
  fencer_ = std::thread([this] { fence_loop(); });
}

HostLease::~HostLease() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  renewer_.join();
  fencer_.join();
}

int64_t HostLease::lease_id() const {
  std::lock_guard lock(mutex_);
  return lease_;
}

bool HostLease::fenced() const {
  std::lock_guard lock(mutex_);
  return fenced_;
}

int64_t HostLease::last_fenced_unix_ms() const {
  std::lock_guard lock(mutex_);
  return last_fenced_unix_ms_;
}

std::chrono::milliseconds HostLease::since_renewal() const {
  std::lock_guard lock(mutex_);
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               confirmed_at_);
}

template <class F>
auto HostLease::on_a_member(F f) -> decltype(f(std::declval<EtcdClient&>())) {
  std::optional<EtcdError> last;
  for (size_t n = 0; n < members_.size(); ++n) {
    const size_t i = (preferred_ + n) % members_.size();
    try {
      auto answer = f(*members_[i]);
      preferred_ = i;
      return answer;
    } catch (const EtcdError& e) {
      if (!e.unavailable()) throw;
      last = e;
    }
  }
  throw *last;
}

bool HostLease::take_up(int64_t lease) {
  auto sent = std::chrono::steady_clock::now();
  try {
    int64_t ttl = on_a_member([&](EtcdClient& etcd) { return etcd.keep_alive(lease); });
    if (ttl <= 0) return false;
    register_under(lease, sent, ttl);
    return true;
  } catch (const EtcdError& e) {
    // Only etcd's "not found" says the lease is gone; anything else leaves
    // it possibly alive, holding what is bound to it: not replaced.
    if (e.grpc_code() == 5) return false;
    throw;
  }
}

void HostLease::grant() {
  auto sent = std::chrono::steady_clock::now();
  register_under(on_a_member([&](EtcdClient& etcd) { return etcd.grant_lease(settings_.ttl_s); }),
                 sent, settings_.ttl_s);
}

void HostLease::register_under(int64_t lease, std::chrono::steady_clock::time_point sent,
                               int64_t ttl_s) {
  etcdserverpb::TxnRequest txn;
  *txn.add_success() =
      EtcdClient::put_op(kAlivePrefix + settings_.host, settings_.alive_record, lease);
  on_a_member([&](EtcdClient& etcd) { return etcd.txn(txn); });
  std::lock_guard lock(mutex_);
  lease_ = lease;
  confirmed_at_ = sent;
  fence_at(sent + std::chrono::seconds(ttl_s) - settings_.fence_margin);
}

void HostLease::fence_at(std::chrono::steady_clock::time_point at) {
  fence_at_ = at;
  if (deadline_) {
    // The file's clock is CLOCK_BOOTTIME (it counts a suspended host's
    // sleep, steady_clock does not).
    const auto left =
        std::chrono::duration_cast<std::chrono::nanoseconds>(at - std::chrono::steady_clock::now());
    const int64_t at_ns = static_cast<int64_t>(FenceDeadline::now_ns()) + left.count();
    deadline_->set_deadline_ns(static_cast<uint64_t>(std::max<int64_t>(at_ns, 0)));
  }
}

void HostLease::renew_loop() {
  std::unique_lock lock(mutex_);
  bool renewed = true;
  while (!stopping_) {
    changed_.wait_for(lock, renewed ? settings_.renew_every : settings_.retry_every,
                      [this] { return stopping_; });
    if (stopping_) break;
    int64_t lease = lease_;
    bool was_fenced = fenced_;
    lock.unlock();
    auto sent = std::chrono::steady_clock::now();
    renewed = false;
    bool same_lease = true;
    try {
      int64_t ttl =
          lease ? on_a_member([&](EtcdClient& etcd) { return etcd.keep_alive(lease); }) : 0;
      if (ttl > 0) {
        renewed = true;
        lock.lock();
        confirmed_at_ = sent;
        fence_at(sent + std::chrono::seconds(ttl) - settings_.fence_margin);
        lock.unlock();
      } else {
        // Expired on the majority's side: whatever this host held under it
        // may have moved. Register again under a new lease.
        log::warning("the host's lease expired; registering again");
        grant();
        renewed = true;
        same_lease = false;
      }
    } catch (const EtcdError& e) {
      log::debug(std::string("lease renewal failed: ") + e.what());
    }
    lock.lock();
    const bool unfence = renewed && fenced_;
    if (unfence || !same_lease) {
      fenced_ = false;
      lock.unlock();
      if (unfence || was_fenced) {
        log::warning(std::string("lease renewed again after a fence") +
                     (same_lease ? "" : " (a new lease: the old one had expired)"));
      }
      if (callbacks_.renewed) callbacks_.renewed(same_lease);
      lock.lock();
    }
    changed_.notify_all();
  }
}

void HostLease::fence_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (!fenced_ && std::chrono::steady_clock::now() >= fence_at_) {
      fenced_ = true;
      last_fenced_unix_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
      auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - confirmed_at_);
      lock.unlock();
      log::warning("fenced: the host's lease was last renewed " + std::to_string(since.count()) +
                   " ms ago and may expire on the majority's side within " +
                   std::to_string(settings_.fence_margin.count()) + " ms");
      if (callbacks_.fenced) callbacks_.fenced();
      lock.lock();
      continue;
    }
    if (fenced_) {
      changed_.wait(lock);
    } else {
      changed_.wait_until(lock, fence_at_);
    }
  }
}

}  // namespace keel::cluster
