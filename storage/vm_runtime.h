// Where a pool VM's keel-vmm lives while it runs, and the command line it
// runs with, from the VM's stored record: one place for keelctl's `vm
// start` now and the cluster agent's supervisor later.
//   $KEEL_RUN_DIR/vms/NAME/api.sock      its control socket (keelctl --socket)
//   $KEEL_RUN_DIR/vms/NAME/keel-vmm.pid  its process
// KEEL_RUN_DIR defaults to /run/keel.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "proto/pool.pb.h"
#include "storage/vm_store.h"

namespace keel::storage {

std::filesystem::path vm_run_dir(const std::string& name);
std::filesystem::path vm_api_socket(const std::string& name);
std::filesystem::path vm_pid_file(const std::string& name);
// The keel-vmm process of the VM when one runs: the PID file names a live
// process whose command line holds the VM's socket.
std::optional<pid_t> running_vmm(const std::string& name);

// keel-vmm's arguments (after the program name) for the VM as stored:
// kernel and initrd from its subvolume (or, when the VM was rolled back to
// a snapshot with memory, --restore of that state), its disk then the seed
// disk, the adapter on its tap with its MAC, an entropy source, the console
// into vms/NAME/console.log, the socket above, and the snapshot root for
// memory snapshots.
std::vector<std::string> vmm_arguments(const VmStore& store, const pool::v1::Vm& vm);

// Where keel-vmm finds a VM's files: in its pool (local_vm_files), or,
// on a compute host that is not its storage host, boot files fetched from
// there and disks over NBD.
struct VmFiles {
  std::string kernel;
  std::string initrd;    // empty: none
  std::string restore;   // a memory snapshot to resume from; empty: boot
  std::string incoming;  // tcp:ADDR:PORT: receive the guest by live migration
  // tcp:ADDR:PORT: keep a replica of the guest its active streams there
  // (keel-vmm --replica-of)
  std::string replica_of;
  std::string disk;  // --disk's source: path=FILE or nbd=tcp:ADDR:PORT/EXPORT
  std::string seed;  // the same, for the cloud-init seed disk
  std::filesystem::path console;
  std::filesystem::path memory_root;
};
VmFiles local_vm_files(const VmStore& store, const pool::v1::Vm& vm);
std::vector<std::string> vmm_arguments(const pool::v1::Vm& vm, const VmFiles& files);

// Where a running VM's memory snapshots are written (keel-vmm
// --snapshot-root): inside its subvolume, so that a Btrfs snapshot taken
// while the guest is paused holds its memory and its disks at one instant.
std::filesystem::path vm_memory_root(const VmStore& store, const std::string& name);

}  // namespace keel::storage
