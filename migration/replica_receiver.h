// keel-vmm --replica-of: the passive side of high availability. Listens,
// takes one active, builds the machine's shape from its Hello (disks and
// taps from this command line), then keeps a copy of the guest: all of
// memory once (and each replicated disk into this host's own copy of its
// image, --disk), then each epoch (stream_format.h) buffered whole and
// applied only when it is complete and its counts and state check out, so
// that the copy is consistent at any moment; then acknowledged.
//
// The copy runs only on a takeover (keelctl takeover, from whoever knows
// the active cannot run any more: this process cannot tell a dead active
// from a cut link) or a switchover (the active's Go after a last epoch).
// A stream lost after the first epoch (or silent for the active's run
// permit and a margin: its guest waits then) leaves the copy waiting for
// either, or for kill; one lost before it stops the process (nothing to take over).
// The stream is untrusted: every frame, count and state is checked, and a
// bad one ends it, naming the problem, with the last good epoch kept.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/tcp_endpoint.h"
#include "control/control_server.h"
#include "migration/disk_block_writer.h"
#include "migration/page_writer.h"
#include "migration/stream/epoch_assembler.h"
#include "migration/stream/frame_channel.h"
#include "proto/control.pb.h"
#include "proto/vm_state.pb.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"

namespace keel::migration {

class ReplicaReceiver {
 public:
  // Listens on options.replica_of at once (InputError when it cannot).
  explicit ReplicaReceiver(const VmmOptions& options);
  // Ends the stream and joins the receiving thread.
  ~ReplicaReceiver();

  // The address it listens on, its port filled in.
  const std::string& address() const { return address_; }

  // Waits for the active and builds the machine from its Hello, its vCPUs
  // parked and its control socket open; null when `stop` turned true
  // first. InputError or StreamError when the stream is refused. `built`
  // as for IncomingMigration::receive.
  std::unique_ptr<Machine> accept(const std::atomic<bool>& stop,
                                  const std::function<void(Machine&)>& built = {});
  // Then, before machine.run(): the thread that keeps the copy.
  void start(Machine& machine);

  // The control socket's replica-status and takeover, on the event loop.
  api::v1::ReplicaInfo info() const;
  // The copy took over (or a switchover brought the guest): it is the
  // guest now.
  bool runs_guest() const;
  void takeover(ControlHandler::Reply reply);

 private:
  enum class Ending { kFailed, kCancelled, kSwitchover };
  void keep_copy();
  Ending receive_epochs(PageWriter& direct, EpochAssembler& epochs);
  // True for a switchover's last epoch.
  bool commit_epoch(EpochAssembler& epochs, PageWriter& memory, std::span<const uint8_t> payload);
  // After a switchover's last epoch, before Go: its state applied.
  void prepare_copy();
  PageBatchCounts write_disk_blocks(std::span<const uint8_t> payload);
  void open_disks(std::span<const uint8_t> hello, Machine& machine);
  // On the event loop: the last epoch's state applied, the vCPUs let go.
  // Empty on success, else why not (the copy stays held).
  std::string run_copy();
  void refuse(const std::string& why);

  const VmmOptions& options_;
  UniqueFd listener_;
  std::string address_;
  std::string peer_;
  std::unique_ptr<FrameChannel> channel_;
  std::chrono::milliseconds takeover_after_{0};  // from the Hello's run permit
  Machine* machine_ = nullptr;
  std::thread thread_;
  // The replicated disks' copies, by index in the configuration (null: a
  // disk not replicated).
  std::vector<std::unique_ptr<DiskBlockWriter>> disks_;
  std::vector<uint64_t> disk_blocks_;

  mutable std::mutex mutex_;
  // The last complete epoch: memory holds it, this is its state.
  uint64_t epoch_ = 0;
  std::optional<state::v1::VmState> committed_state_;
  uint64_t applied_epoch_ = 0;  // the machine holds this epoch's state already
  std::chrono::steady_clock::time_point committed_at_;
  uint64_t last_epoch_us_ = 0;
  uint64_t last_epoch_pages_ = 0;
  api::v1::ReplicaPhase phase_ = api::v1::REPLICA_PHASE_SYNCING;
  std::string error_;
  std::string damaged_;     // applying an epoch failed halfway: the copy must not run
  bool receiving_ = false;  // the thread still reads the stream
  bool taking_over_ = false;
  ControlHandler::Reply takeover_reply_;
};

}  // namespace keel::migration
