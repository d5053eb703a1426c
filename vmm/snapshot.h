// Snapshots: one client of the migratable seam (vmm/migratable_machine.h).
// A snapshot is a directory holding `memory` (the guest's RAM) and `state`
// (the VmState, written last: its presence means a whole snapshot).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "common/unique_fd.h"
#include "proto/control.pb.h"
#include "proto/vm_state.pb.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"
#include "vmm/migratable_machine.h"
#include "vmm/state/snapshot_root.h"

namespace keel {

// A snapshot in two steps, so that the file system's pace is never the
// event loop's. The constructor, with the machine paused (on the event
// loop): DIR below `root` made (see SnapshotRoot: no link followed, no file
// overwritten) and its memory file created, then the state captured
// (devices quiesced: nothing touches guest memory until the machine
// resumes); throws InputError for a directory that cannot take it. write(),
// from any thread, the machine still paused: DIR/memory, then DIR/state (its
// presence means a whole snapshot); abandoned between extents once `cancel`
// is set, leaving no state file.
class SnapshotWrite {
 public:
  SnapshotWrite(MigratableMachine& machine, const SnapshotRoot& root, const std::string& dir);
  api::v1::SnapshotResult write(const std::atomic<bool>& cancel);

 private:
  const GuestMemory& memory_;
  std::string dir_;
  std::chrono::steady_clock::time_point begin_;
  UniqueFd directory_;
  UniqueFd memory_file_;
  state::v1::VmState state_;
};

// Both steps at once.
api::v1::SnapshotResult write_snapshot(MigratableMachine& machine, const SnapshotRoot& root,
                                       const std::string& dir);

// keel-vmm --restore DIR: the snapshot's machine (its configuration, with
// the command line's disks and taps in place of its own), built to shape,
// its memory read and its state applied; not running yet. The state file
// is untrusted input: refused by name before memory is read when it does
// not fit (CPU features, shape), checked whole before anything is applied.
std::unique_ptr<Machine> restore_snapshot(const VmmOptions& options);

}  // namespace keel
