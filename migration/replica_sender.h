// The active side of high availability (DESIGN.md: HA is migration that
// never finishes), on a thread of its own while the guest runs: the shape
// for the passive to check, all of memory once, then checkpoints in epochs.
// Each checkpoint stops the vCPUs, captures the device state, copies the
// pages written since the last one (KVM's dirty log and the VMM's marks)
// and lets the guest run on at once; the epoch then travels while the
// guest runs the next, and the passive applies it whole and acknowledges.
//
// Epoch length: it starts at the target asked and grows (up to the upper
// bound) while a checkpoint's pause would take more than 5% of the guest's
// time, shrinking back towards the target when pauses are short; an epoch
// is never shorter than its transfer and acknowledgement take (one epoch in
// flight at most). An epoch in which the guest sent network output ends
// early (its output waits for the ack): after the least epoch, and no
// sooner than twenty of its pauses, so pauses stay under 5% of the time.
//
// Writable disks are replicated beside memory (the passive keeps its own
// copy of each image): all of it once, then in each checkpoint's pause the
// 4 KiB blocks the guest's requests wrote since the last one (the devices
// note them; quiescing finished every request), read back from the image
// and sent with the epoch, so the passive's disk matches its memory.
//
// The guest runs only within its run permit (migration/run_permit.h), which
// each acknowledgement renews: a passive that stops answering may take the
// guest over, so the guest here waits for it. Any failure after the first
// checkpoint (the passive dies, refuses, stops answering) ends the
// replication with the guest paused here and its unacknowledged output
// held (FAILED, guest_held): the passive may run the guest from its last
// epoch, and only whoever can tell which copy may run (keel-agent, through
// etcd) lets this one run on unprotected (run_on(), keelctl replica-stop).
// A replication ended on purpose (stop()) lets the guest run on once the
// passive, told, closed the stream (it dropped its copy); a passive that
// does not within 5 s may not have heard, and the guest is held so too.
// A switchover is a live migration's handover after a last checkpoint,
// which short epochs while the guest runs (throttled when it writes fast)
// make small: its pause is that checkpoint, its transfer straight from
// guest memory with Go behind it, the passive's commit and its running; a
// passive that does not confirm after go leaves the guest paused here
// (UNCERTAIN), never running twice: only kill, or replica-stop --run-on
// on the operator's word that the passive's copy never ran.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/tcp_endpoint.h"
#include "common/unique_fd.h"
#include "migration/epoch_pages.h"
#include "migration/run_permit.h"
#include "migration/stream/frame_channel.h"
#include "proto/control.pb.h"
#include "vmm/migratable_machine.h"

namespace keel::migration {

class VcpuThrottle;

struct ReplicaSettings {
  TcpEndpoint to;
  std::chrono::milliseconds epoch{30};
  std::chrono::milliseconds min_epoch{10};
  std::chrono::milliseconds max_epoch{250};
  // How long the guest may run after the passive last surely heard from
  // it (run_permit.h); longer than an epoch and its acknowledgement.
  std::chrono::milliseconds run_permit{500};
};

class ReplicaSender : public std::enable_shared_from_this<ReplicaSender> {
 public:
  ReplicaSender(MigratableMachine& machine, ReplicaSettings settings);

  // The replication, on the calling thread, until stop() or a failure;
  // returns how it ended. `first` runs once: with the status when the first
  // epoch is acknowledged (PROTECTED), or when it failed before that.
  api::v1::ReplicaInfo run(std::function<void(const api::v1::ReplicaInfo&)> first);

  // From any thread: ends the replication (the passive is told). Empty
  // when done, else why not.
  std::string stop();
  // After a failure (FAILED, guest_held), or a switchover whose passive
  // never confirmed (UNCERTAIN; on the event loop): the guest runs on
  // here, unprotected, its held output let go. Empty when done, else why
  // not.
  std::string run_on();
  // From any thread: a planned handover at the next checkpoint (the guest
  // stays stopped, the passive runs it from that epoch; run() then returns
  // SWITCHED_OVER and the machine is handed over). Empty when begun.
  std::string switchover();
  api::v1::ReplicaInfo info() const;

 private:
  // A passive silent this long is taken for dead: the replication ends and
  // the guest runs on unprotected. Short, since protection is lost
  // meanwhile; long enough for a big epoch on a slow link. Also a
  // switchover's wait for the passive after the last epoch.
  static constexpr std::chrono::seconds kStreamTimeout{10};

  void connect_and_copy();
  // One checkpoint: pause, capture, copy, resume; then the epoch sent and
  // its acknowledgement awaited.
  // `last`: a switchover's, which leaves the guest stopped. Returns when
  // the vCPUs stopped.
  std::chrono::steady_clock::time_point checkpoint(uint64_t epoch, bool last);
  // Before a switchover's last checkpoint: short epochs from `epoch` on,
  // the guest throttled, until the last would be short; returns its number.
  uint64_t converge_for_switchover(uint64_t epoch);
  void switchover_step(std::chrono::steady_clock::time_point stopped, const std::string& what);
  // After the last checkpoint's ack (Go went with its epoch): output,
  // disks, running.
  void hand_over(uint64_t epoch, std::chrono::steady_clock::time_point stopped);
  void adapt_target(std::chrono::steady_clock::duration pause);
  // Until the next checkpoint is due (the target, or early for output), or
  // a stop or switchover.
  void wait_for_checkpoint();
  // From a device (its first held frame of the epoch under way).
  void output_held();
  void set_phase(api::v1::ReplicaPhase phase);
  // On the sender's thread after a failure: the guest paused (if the first
  // checkpoint made a copy the passive may run), the phase FAILED.
  void hold_guest(const std::string& why);
  // After an acknowledgement renewed the permit: the guest the permit
  // paused runs again.
  void resume_if_permitted();
  // After the end was sent: whether the passive closed the stream (it
  // dropped its copy, or died) within 5 s.
  bool passive_dropped_copy();

  MigratableMachine& machine_;
  const ReplicaSettings settings_;
  std::unique_ptr<FrameChannel> channel_;
  std::unique_ptr<kvm::DirtyLog> dirty_log_;
  std::unique_ptr<RunPermit> permit_;  // from the first checkpoint on
  EpochPages staged_;
  // The replicated disks (writable ones), read back from their images: the
  // first copy whole, then each epoch's written blocks.
  struct Disk {
    uint64_t index;  // in the configuration
    UniqueFd image;
    uint64_t blocks;
    EpochPages staged;
  };
  std::vector<Disk> disks_;
  std::vector<uint64_t> open_disks();  // Hello.disk_bytes
  void copy_disk(Disk& disk);
  std::vector<uint64_t> bitmap_;
  // converge_for_switchover's: the pages its last look found written,
  // which the next checkpoint starts from (the VMM's marks leave with a
  // look); its throttle while it runs.
  std::vector<uint64_t> carried_;
  VcpuThrottle* throttle_ = nullptr;
  // Bytes per second sent, the last epoch of a MiB or more.
  double send_rate_ = 0;
  std::chrono::milliseconds target_;
  // Output commit's latency: the guest sent a frame in the epoch under way
  // (its answer waits for this epoch's ack), so the checkpoint comes early,
  // once `early_gap_` passed (the least epoch, and at least 20 pauses long:
  // the pause's share stays under 5%).
  bool output_waiting_ = false;
  std::chrono::steady_clock::duration early_gap_{};
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point first_checkpoint_;
  std::chrono::steady_clock::time_point last_checkpoint_;
  std::chrono::steady_clock::time_point last_ack_;
  std::chrono::steady_clock::duration paused_total_{};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> switching_{false};
  bool go_sent_ = false;
  bool paused_ = false;  // the last checkpoint left the guest stopped
  bool held_ = false;    // failed: the guest waits for run_on() or the passive
  mutable std::mutex mutex_;
  std::condition_variable stop_changed_;
  api::v1::ReplicaInfo info_;
};

}  // namespace keel::migration
