// The sending side of a live migration (pre-copy), on a thread of its own
// while the guest runs: the shape for the destination to check, all of
// memory once, then rounds of the pages written meanwhile (KVM's dirty log
// and the VMM's own marks) until the rest fits the pause the operator
// allows (throttling the vCPUs when the guest writes faster than the link
// carries), then the pause: the last pages and the device state, and the
// guest handed over once the destination says it runs it.
//
// Until the destination is told to go, any failure (the destination dies
// or refuses, the stream breaks, cancel) leaves the guest running here with
// nothing lost. After that, a destination that does not confirm leaves the
// guest paused here (phase UNCERTAIN): it may run there, and running it
// twice would be worse than waiting for the operator.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "common/tcp_endpoint.h"
#include "migration/stream/frame_channel.h"
#include "proto/control.pb.h"
#include "vmm/migratable_machine.h"

namespace keel::migration {

struct MigrationSettings {
  TcpEndpoint to;
  std::chrono::milliseconds downtime{5};
  uint64_t bandwidth = 0;  // bytes per second; 0: no cap
};

class MigrationSender {
 public:
  MigrationSender(MigratableMachine& machine, MigrationSettings settings);

  // The whole migration, on the calling thread (not the machine's event
  // loop). Returns the outcome; COMPLETED means the machine was handed over.
  api::v1::MigrationInfo run();

  // From any thread: ends the migration unless the destination was told to
  // run the guest already. Empty when cancelled, else why not.
  std::string cancel();
  // From any thread: progress so far.
  api::v1::MigrationInfo info() const;

 private:
  api::v1::MigrationInfo run_steps();
  void connect_and_check();
  void first_pass();
  void sync();
  std::vector<uint64_t> dirty_rounds();
  void stop_and_copy(std::vector<uint64_t> dirty);
  void set_phase(api::v1::MigrationPhase phase);
  void add_round(api::v1::MigrationRound round);

  MigratableMachine& machine_;
  const MigrationSettings settings_;
  std::unique_ptr<FrameChannel> channel_;
  std::unique_ptr<kvm::DirtyLog> dirty_log_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point log_started_;
  std::atomic<bool> cancelled_{false};
  bool go_sent_ = false;
  bool paused_ = false;
  double bandwidth_ = 0;  // bytes per second, measured
  std::chrono::steady_clock::duration last_sync_{};
  mutable std::mutex mutex_;
  std::condition_variable cancel_changed_;
  bool finished_ = false;
  api::v1::MigrationInfo info_;
};

}  // namespace keel::migration
