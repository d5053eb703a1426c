// The control socket's replica operations for one machine. On the active:
// replicate (the answer once the first epoch is acknowledged, or the
// replication failed), replica-status, replica-stop, switchover (the
// answer once the passive runs the guest); the replication runs
// on a thread of its own (ReplicaSender). On a passive (keel-vmm
// --replica-of): replica-status and takeover, from its ReplicaReceiver.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "control/control_server.h"
#include "control/metric_set.h"
#include "migration/replica_receiver.h"
#include "migration/replica_sender.h"

namespace keel::migration {

class ReplicaControl {
 public:
  // `passive`: this process keeps a copy (null on an active).
  ReplicaControl(MigratableMachine& machine, ReplicaReceiver* passive)
      : machine_(machine), passive_(passive) {}
  // Stops a replication under way (the passive is told) and waits for it.
  ~ReplicaControl();

  // Replicate, ReplicaStatus, ReplicaStop, Takeover.
  void handle(const api::v1::Request& request, ControlHandler::Reply reply);
  // Non-empty while a replication runs: why pause, resume, snapshot and
  // migrate are refused.
  std::string busy() const;
  // The replication's (or, on a passive, the copy's) state as metrics.
  void add_metrics(MetricSet& set) const;

 private:
  void start(const api::v1::Replicate& request, ControlHandler::Reply reply);

  MigratableMachine& machine_;
  ReplicaReceiver* passive_;
  mutable std::mutex mutex_;
  std::shared_ptr<ReplicaSender> sender_;  // the one under way, or the last
  bool running_ = false;
  ControlHandler::Reply switchover_reply_;  // answered when the replication ends
  std::thread thread_;
};

}  // namespace keel::migration
