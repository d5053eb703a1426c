// keel-agent's relay of its VMMs' own events (paused, resumed, guest panic,
// device reset, disk I/O error, migration, ...; proto/control.proto's
// Event) into the cluster's event log, each labelled with its VM and this
// host. One thread per keel-vmm, subscribed on its control socket from the
// oldest event its ring keeps. What was relayed is remembered in the VM's
// run directory (events.relayed: the VMM's stream and its last number), so
// an agent restarted meanwhile neither repeats events nor skips any the
// ring still holds.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "proto/agent.pb.h"

namespace keel::cluster {

class VmmEventRelay {
 public:
  explicit VmmEventRelay(std::function<void(keel::agent::v1::ClusterEvent)> tell);
  // Stops the relays (each notices within a second); the VMMs run on.
  ~VmmEventRelay();
  VmmEventRelay(const VmmEventRelay&) = delete;
  VmmEventRelay& operator=(const VmmEventRelay&) = delete;

  // Relays `vm`'s keel-vmm unless a relay of it runs already. A relay ends
  // with its VMM's stream (or when it cannot subscribe): called again, it
  // starts anew.
  void relay(const std::string& vm);

 private:
  void run(const std::string& vm);

  std::function<void(keel::agent::v1::ClusterEvent)> tell_;
  std::mutex mutex_;
  std::map<std::string, std::thread> relays_;
  std::set<std::string> finished_;
  std::atomic<bool> stopping_{false};
};

}  // namespace keel::cluster
