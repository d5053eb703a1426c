// The control socket's live-migration operations (migrate, migrate-status,
// migrate-cancel) for one machine: a migration runs on a thread of its own
// (MigrationSender); its answer comes when it ends; status and cancel are
// answered at once. The replica operations go to its ReplicaControl.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "migration/migration_sender.h"
#include "migration/replica_control.h"
#include "vmm/machine.h"

namespace keel::migration {

class MigrationControl : public MachineExtension {
 public:
  // `passive`: this process keeps a replica (keel-vmm --replica-of).
  explicit MigrationControl(MigratableMachine& machine, ReplicaReceiver* passive = nullptr)
      : machine_(machine), replicas_(machine, passive) {}
  // Cancels a migration under way and waits for its thread.
  ~MigrationControl() override;

  void handle(const api::v1::Request& request, Reply reply) override;
  std::string busy() const override;
  bool may_pause_for_fence() const override;
  // Migrations by outcome, their rounds, bytes and pauses (the one under
  // way counted as it goes), and the replication's state.
  void add_metrics(MetricSet& set) const override;

 private:
  void start(const api::v1::Migrate& request, Reply reply);

  MigratableMachine& machine_;
  ReplicaControl replicas_;
  mutable std::mutex mutex_;
  std::shared_ptr<MigrationSender> sender_;  // the one under way, or the last
  bool running_ = false;
  // Of the migrations that ended.
  struct Totals {
    uint64_t completed = 0, failed = 0, cancelled = 0, uncertain = 0;
    uint64_t rounds = 0, bytes = 0, downtime_us = 0;
  } ended_;
  std::thread thread_;
};

}  // namespace keel::migration
