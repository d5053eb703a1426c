// Snapshots through the migratable seam. The state file is untrusted
// input: everything in it is checked before it is used, by the pieces that
// own it (the machine's fit, devices, vCPU state, memory image).
#include "vmm/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>

#include "common/error.h"
#include "vmm/state/snapshot_memory.h"
#include "vmm/state/snapshot_root.h"
#include "vmm/state/snapshot_state_file.h"

namespace keel {

namespace pb = ::keel::api::v1;
namespace st = ::keel::state::v1;

namespace {

constexpr const char* kStateFile = "state";
constexpr const char* kMemoryFile = "memory";

uint64_t ms_since(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t)
          .count());
}

st::VmState read_snapshot_state(const std::string& dir) {
  const std::string payload = read_state_file(dir + "/" + kStateFile);
  st::VmState state;
  if (!state.ParseFromString(payload))
    throw InputError("snapshot state in " + dir + " does not parse");
  if (state.schema_version() != kVmStateSchemaVersion) {
    throw InputError("snapshot schema version " + std::to_string(state.schema_version()) +
                     " (this keel-vmm reads " + std::to_string(kVmStateSchemaVersion) + ")");
  }
  return state;
}

}  // namespace

// The shape first (from the snapshot's configuration), the fit checked
// before gigabytes are read (CPU features, shape), memory, then the state.
std::unique_ptr<Machine> restore_snapshot(const VmmOptions& options) {
  const st::VmState snapshot = read_snapshot_state(options.restore_dir);
  VmmOptions shape = options;
  shape.config = config_for_restore(options, snapshot.config());
  auto machine = Machine::shape_only(shape);
  machine->check_state_fits(snapshot);
  GuestMemory& memory = machine->guest_memory();
  read_memory_image(snapshot.memory(), options.restore_dir + "/" + kMemoryFile,
                    memory.host_all_for_write().data(), memory.size());
  machine->apply_state(snapshot);
  return machine;
}

// With every vCPU parked: the state captured (devices quiesced first),
// memory written, then the state file last (its presence means a whole
// snapshot). The event loop is blocked meanwhile; the guest is paused anyway.
pb::SnapshotResult write_snapshot(MigratableMachine& machine, const SnapshotRoot& root,
                                  const std::string& dir) {
  const auto begin = std::chrono::steady_clock::now();
  const UniqueFd directory = root.make_directory(dir);
  struct stat existing {};
  if (::fstatat(directory.get(), kStateFile, &existing, AT_SYMLINK_NOFOLLOW) == 0) {
    throw InputError("snapshot directory " + dir + " already holds a snapshot");
  }
  // Made before anything is captured: a name that cannot be used costs
  // the guest nothing.
  const UniqueFd memory_file =
      create_snapshot_file(directory.get(), kMemoryFile, "snapshot directory " + dir);

  st::VmState state = machine.capture_state();
  const GuestMemory& memory = machine.guest_memory();
  *state.mutable_memory() =
      write_memory_image(memory.fd(), memory.host_base(), memory.size(), memory_file.get(),
                         dir + "/" + kMemoryFile, kMemoryFile);
  std::string payload;
  if (!state.SerializeToString(&payload)) throw std::runtime_error("cannot serialize the VM state");
  write_state_file(directory.get(), kStateFile, payload, "snapshot directory " + dir);

  pb::SnapshotResult result;
  result.set_dir(dir);
  result.set_bytes_written(state.memory().bytes_written() + payload.size());
  result.set_memory_pages_written(state.memory().bytes_written() / 4096);
  result.set_duration_ms(ms_since(begin));
  return result;
}

}  // namespace keel
