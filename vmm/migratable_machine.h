// The machine as snapshots, live migration and HA replicas drive it (the
// migratable seam): pause and resume the vCPUs; capture the whole VM state
// but memory; apply such a state onto a machine of the same shape whose
// memory already holds the guest's; the guest memory; its dirty log.
// A snapshot is one client: capture, then write memory and state to files;
// a restore builds the shape, fills memory, then applies the state.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/guest_memory.h"
#include "proto/vm_state.pb.h"
#include "vmm/kvm/dirty_log.h"

namespace keel {

// VmState's layout (proto/vm_state.proto); a reader refuses others.
// 2: device states carry ids.
inline constexpr uint32_t kVmStateSchemaVersion = 2;

class MigratableMachine {
 public:
  virtual ~MigratableMachine() = default;

  // Parks every vCPU outside KVM_RUN (a pending I/O exit finished first);
  // false, and resumed again, when one did not get there within `timeout`.
  // Devices keep running until capture_state quiesces them.
  virtual bool pause(std::chrono::milliseconds timeout) = 0;
  // pause() without the wait, from any thread: the kicks go out from the
  // caller and `parked` runs on the vCPU thread that parks last (or here
  // when all already are); never once resume() came first. Keep it short.
  virtual void request_pause(std::function<void()> parked) = 0;
  virtual void resume() = 0;

  // Paused: every device quiesced and saved under its id, each vCPU, the
  // irqchip, PIT, clock, CPU features and the configuration. The memory
  // image is left empty: memory moves on its own (files, pages on a wire).
  virtual state::v1::VmState capture_state() = 0;

  // Refuses, with an InputError naming the difference, a state this
  // machine cannot take: another schema version, another shape (vCPUs,
  // memory, devices and what the guest sees of them; disk paths and taps
  // are this host's business), CPU features this host lacks. A client
  // calls it before moving memory; apply_state calls it again.
  virtual void check_state_fits(const state::v1::VmState& state) = 0;

  // What a receiver needs to build this machine's shape and check it can
  // run it, before any memory moves: a VmState holding only the schema
  // version, the configuration and the CPU features. check_shape_fits is
  // check_state_fits for such a state (no vCPU states to count). On the
  // event loop (see post).
  virtual state::v1::VmState shape() = 0;
  virtual void check_shape_fits(const state::v1::VmState& shape) = 0;

  // Onto this machine, built to the state's shape and not run yet, its
  // memory already the guest's: checks everything as untrusted input
  // before applying (InputError naming the problem), then applies.
  virtual void apply_state(const state::v1::VmState& state) = 0;

  // Runs the code capture_state and apply_state run for KVM's state once,
  // on scratch objects, while the guest runs on (or before it is here):
  // the pause is then not the first run of that code in this process
  // (under an emulated host a first run costs many times more). Any
  // thread, once the shape is known (shape() or check_shape_fits).
  virtual void rehearse_state() = 0;

  // Runs `task` on the machine's event loop (devices and the control
  // socket live there: capture_state and apply_state run there too once the
  // machine runs); from any thread.
  virtual void post(std::function<void()> task) = 0;

  // Paused and captured: every write the guest was told is done reaches
  // the disks' stable storage, so another host reading them sees it. Any
  // thread; may block (fdatasync).
  virtual void sync_disks() = 0;
  // The disks' image locks: released by the source just before it tells
  // the destination to run the guest, claimed by the destination before its
  // vCPUs start (InputError naming the image another process holds).
  virtual void release_disks() = 0;
  virtual void claim_disks() = 0;

  // The guest runs here now (a migration's destination): each network card
  // announces its MAC (VirtioDevice::announce). Returns at once.
  virtual void announce_network() = 0;

  // HA disk replication (VirtioDevice::track_writes), on the event loop:
  // from track_disk_writes(true) on, each disk notes the 4 KiB blocks the
  // guest's requests write; harvest_disk_writes() takes the notes, one
  // bitmap per disk in the configuration's order (complete once the
  // devices are quiesced: capture_state).
  virtual void track_disk_writes(bool on) = 0;
  virtual std::vector<std::vector<uint64_t>> harvest_disk_writes() = 0;

  // HA output commit (VirtioDevice::hold_output), on the event loop: from
  // hold_output(true) on, the guest's network output waits in its devices;
  // a checkpoint's pause closes epoch `epoch` (close_output_epoch), and the
  // passive's acknowledgement of it lets that output go (release_output);
  // hold_output(false) lets everything go.
  virtual void hold_output(bool held) = 0;
  // `hook` runs (on a device's thread, briefly) when the epoch under way
  // gets its first held frame; an empty one ends that.
  virtual void on_output_held(std::function<void()> hook) = 0;
  virtual void close_output_epoch(uint64_t epoch) = 0;
  virtual void release_output(uint64_t epoch) = 0;

  // The guest runs elsewhere now (a migration's destination confirmed it
  // runs): stop for good, leaving devices and memory as they are; keel-vmm
  // exits with status "migrated". From any thread.
  virtual void hand_over(std::string detail) = 0;

  virtual GuestMemory& guest_memory() = 0;
  // KVM's dirty log of every slot and the VMM's own marks, from now until
  // the log is destroyed.
  virtual std::unique_ptr<kvm::DirtyLog> start_dirty_log() = 0;
};

}  // namespace keel
