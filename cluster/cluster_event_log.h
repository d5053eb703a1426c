// The cluster's event log (keelctl events): what happened to hosts and VMs,
// kept in etcd so that any host tells the same story in the same order.
// Each event is numbered from 1 without gaps by a transaction on a counter
// key (/keel/events/seq) that also writes the event (/keel/events/log/N, the
// ClusterEvent as JSON) and drops the one kKept before it. Readers take the
// events after a number, then follow new ones with an etcd watch.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "proto/agent.pb.h"

namespace keel::cluster {

// An event of `type` about `vm` (may be empty), with a line for people.
keel::agent::v1::ClusterEvent cluster_event(keel::agent::v1::ClusterEventType type,
                                            const std::string& vm, const std::string& detail);

class ClusterEventLog {
 public:
  static constexpr uint64_t kKept = 4096;

  explicit ClusterEventLog(std::shared_ptr<EtcdClient> etcd) : etcd_(std::move(etcd)) {}

  // Logs `event` with the next number; the number. Throws EtcdError.
  uint64_t append(keel::agent::v1::ClusterEvent event);

  struct Told {
    keel::agent::v1::ClusterEvent event;
    uint64_t missed = 0;  // events before it no longer kept
  };
  // The events after `after` in order (from_now: after the newest), then,
  // with `follow`, each new one as it is logged, until `each` returns
  // false or `stop` says so (looked at every second while nothing comes).
  // Throws std::invalid_argument for an `after` past the newest, EtcdError.
  void read(uint64_t after, bool from_now, bool follow,
            const std::function<bool(const Told&)>& each, const std::function<bool()>& stop);

 private:
  std::shared_ptr<EtcdClient> etcd_;
};

// Events told by this agent, appended to the log in order by a thread of
// its own: the action that told one never waits for etcd, and events told
// while the host has no majority (a fence) are logged once it has one
// again. At most 1024 wait; older ones are dropped, counted and logged.
class ClusterEventTeller {
 public:
  ClusterEventTeller(std::string host, std::function<std::shared_ptr<EtcdClient>()> etcd);
  ~ClusterEventTeller();
  ClusterEventTeller(const ClusterEventTeller&) = delete;
  ClusterEventTeller& operator=(const ClusterEventTeller&) = delete;

  // `event` with this host's name (unless it names one) and the time now.
  void tell(keel::agent::v1::ClusterEvent event);

 private:
  void run();

  std::string host_;
  std::function<std::shared_ptr<EtcdClient>()> etcd_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<keel::agent::v1::ClusterEvent> waiting_;
  uint64_t dropped_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace keel::cluster
