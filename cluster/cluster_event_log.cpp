#include "cluster/cluster_event_log.h"

#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "cluster/cluster_keys.h"
#include "common/log.h"

namespace keel::cluster {

namespace api = ::keel::agent::v1;
namespace pb = ::etcdserverpb;

namespace {

const std::string kSeqKey = "/keel/events/seq";
const std::string kLogPrefix = "/keel/events/log/";

// Zero-padded, so that the keys sort as the numbers do.
std::string log_key(uint64_t seq) {
  char digits[21];
  std::snprintf(digits, sizeof digits, "%020llu", static_cast<unsigned long long>(seq));
  return kLogPrefix + digits;
}

uint64_t seq_of(const std::optional<KeyValue>& counter) {
  if (!counter) return 0;
  try {
    return std::stoull(counter->value);
  } catch (const std::exception&) {
    throw std::runtime_error("the cluster's event counter " + kSeqKey + " holds '" +
                             counter->value + "', not a number");
  }
}

}  // namespace

api::ClusterEvent cluster_event(api::ClusterEventType type, const std::string& vm,
                                const std::string& detail) {
  api::ClusterEvent event;
  event.set_type(type);
  event.set_vm(vm);
  event.set_detail(detail);
  return event;
}

uint64_t ClusterEventLog::append(api::ClusterEvent event) {
  // Another host's append between the read and the transaction makes it
  // fail; read again. Many hosts telling at once still each get through.
  for (int attempt = 0; attempt < 50; ++attempt) {
    const auto counter = etcd_->get(kSeqKey);
    const uint64_t seq = seq_of(counter) + 1;
    event.set_seq(seq);
    pb::TxnRequest txn;
    *txn.add_compare() = counter ? EtcdClient::key_mod_revision(kSeqKey, counter->mod_revision)
                                 : EtcdClient::key_absent(kSeqKey);
    *txn.add_success() = EtcdClient::put_op(kSeqKey, std::to_string(seq));
    *txn.add_success() = EtcdClient::put_op(log_key(seq), to_json(event));
    if (seq > kKept) *txn.add_success() = EtcdClient::delete_op(log_key(seq - kKept));
    if (etcd_->txn(txn).succeeded()) return seq;
  }
  throw std::runtime_error("the cluster's event log: 50 tries lost to other hosts' events");
}

void ClusterEventLog::read(uint64_t after, bool from_now, bool follow,
                           const std::function<bool(const Told&)>& each,
                           const std::function<bool()>& stop) {
  const uint64_t newest = seq_of(etcd_->get(kSeqKey));
  if (from_now) after = newest;
  if (after > newest) {
    throw std::invalid_argument("after " + std::to_string(after) +
                                ": the cluster's newest event is " + std::to_string(newest));
  }
  uint64_t told = after;
  bool keep_on = true;
  auto deliver = [&](const KeyValue& kv) {
    Told t;
    if (!from_json(kv.value, &t.event) || t.event.seq() <= told) return true;
    // From the oldest (after 0) nothing is missing; else what went between.
    if (told > 0 || after > 0) t.missed = t.event.seq() - told - 1;
    told = t.event.seq();
    keep_on = each(t);
    return keep_on;
  };
  const std::string end = prefix_range_end(kLogPrefix);
  for (;;) {
    const auto kept = etcd_->range(log_key(told + 1), end);
    for (const auto& kv : kept.kvs) {
      if (!deliver(kv)) return;
    }
    if (!follow || stop()) return;
    // Watched a second at a time from the range's revision, so that a
    // reader gone (`stop`) is noticed and the watch never starts from a
    // revision etcd may have compacted meanwhile (other keys move the
    // store's revision on while the log is quiet).
    etcd_->watch(log_key(told + 1), end, kept.revision + 1, std::chrono::seconds(1), deliver);
    if (!keep_on) return;
  }
}

ClusterEventTeller::ClusterEventTeller(std::string host,
                                       std::function<std::shared_ptr<EtcdClient>()> etcd)
    : host_(std::move(host)), etcd_(std::move(etcd)), thread_([this] { run(); }) {}

ClusterEventTeller::~ClusterEventTeller() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ClusterEventTeller::tell(api::ClusterEvent event) {
  if (event.host().empty()) event.set_host(host_);
  event.set_time_unix_ns(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()));
  {
    std::lock_guard lock(mutex_);
    if (waiting_.size() >= 1024) {
      // The oldest but the one being logged now.
      waiting_.erase(waiting_.begin() + 1);
      ++dropped_;
    }
    waiting_.push_back(std::move(event));
  }
  wake_.notify_all();
}

void ClusterEventTeller::run() {
  std::unique_lock lock(mutex_);
  std::string last_problem;
  // At the end, what waits gets one more try each, for two seconds at most.
  std::optional<std::chrono::steady_clock::time_point> end_by;
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
    if (stopping_ && !end_by) end_by = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    if (waiting_.empty() || (end_by && std::chrono::steady_clock::now() > *end_by)) {
      if (!waiting_.empty()) {
        log::warning("cluster events: " + std::to_string(waiting_.size()) +
                     " not logged before the agent stopped");
      }
      if (stopping_) return;
      continue;
    }
    if (dropped_ > 0) {
      log::warning("cluster events: " + std::to_string(dropped_) +
                   " dropped while etcd could not take them");
      dropped_ = 0;
    }
    api::ClusterEvent event = waiting_.front();
    lock.unlock();
    // Outside the lock: etcd_() takes the agent's own.
    std::string problem;
    try {
      auto etcd = etcd_();
      if (!etcd) throw std::runtime_error("not in a cluster");
      ClusterEventLog(etcd).append(event);
    } catch (const std::exception& e) {
      problem = e.what();
    }
    lock.lock();
    if (problem.empty()) {
      if (!waiting_.empty()) waiting_.pop_front();
      last_problem.clear();
      continue;
    }
    if (end_by) {
      if (!waiting_.empty()) waiting_.pop_front();  // one try each at the end
      continue;
    }
    if (problem != last_problem) log::warning("cluster events: cannot log one yet: " + problem);
    last_problem = problem;
    // Tried again in a second (or at the end): etcd may need a majority back.
    wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
  }
}

}  // namespace keel::cluster
