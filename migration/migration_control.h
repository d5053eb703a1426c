// The control socket's live-migration operations (migrate, migrate-status,
// migrate-cancel) for one machine: a migration runs on a thread of its own
// (MigrationSender); its answer comes when it ends; status and cancel are
// answered at once.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "migration/migration_sender.h"
#include "vmm/machine.h"

namespace keel::migration {

class MigrationControl : public MachineExtension {
 public:
  explicit MigrationControl(MigratableMachine& machine) : machine_(machine) {}
  // Cancels a migration under way and waits for its thread.
  ~MigrationControl() override;

  void handle(const api::v1::Request& request, Reply reply) override;
  std::string busy() const override;

 private:
  void start(const api::v1::Migrate& request, Reply reply);

  MigratableMachine& machine_;
  mutable std::mutex mutex_;
  std::shared_ptr<MigrationSender> sender_;  // the one under way, or the last
  bool running_ = false;
  std::thread thread_;
};

}  // namespace keel::migration
