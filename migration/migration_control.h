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

 private:
  void start(const api::v1::Migrate& request, Reply reply);

  MigratableMachine& machine_;
  ReplicaControl replicas_;
  mutable std::mutex mutex_;
  std::shared_ptr<MigrationSender> sender_;  // the one under way, or the last
  bool running_ = false;
  std::thread thread_;
};

}  // namespace keel::migration
