// Snapshots: one client of the migratable seam (vmm/migratable_machine.h).
// A snapshot is a directory holding `memory` (the guest's RAM) and `state`
// (the VmState, written last: its presence means a whole snapshot).
#pragma once

#include <memory>
#include <string>

#include "proto/control.pb.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"
#include "vmm/migratable_machine.h"
#include "vmm/state/snapshot_root.h"

namespace keel {

// With the machine paused: captures its state, writes DIR/memory and then
// DIR/state, DIR below `root` (see SnapshotRoot: no link followed, no file
// overwritten). Throws InputError for a directory that cannot take it.
api::v1::SnapshotResult write_snapshot(MigratableMachine& machine, const SnapshotRoot& root,
                                       const std::string& dir);

// keel-vmm --restore DIR: the snapshot's machine (its configuration, with
// the command line's disks and taps in place of its own), built to shape,
// its memory read and its state applied; not running yet. The state file
// is untrusted input: refused by name before memory is read when it does
// not fit (CPU features, shape), checked whole before anything is applied.
std::unique_ptr<Machine> restore_snapshot(const VmmOptions& options);

}  // namespace keel
