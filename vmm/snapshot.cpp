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

// With every vCPU parked: the directory and the memory file first (a name
// that cannot be used costs the guest nothing), then the state captured.
SnapshotWrite::SnapshotWrite(MigratableMachine& machine, const SnapshotRoot& root,
                             const std::string& dir)
    : memory_(machine.guest_memory()),
      dir_(dir),
      begin_(std::chrono::steady_clock::now()),
      directory_(root.make_directory(dir)) {
  struct stat existing {};
  if (::fstatat(directory_.get(), kStateFile, &existing, AT_SYMLINK_NOFOLLOW) == 0) {
    throw InputError("snapshot directory " + dir + " already holds a snapshot");
  }
  memory_file_ = create_snapshot_file(directory_.get(), kMemoryFile, "snapshot directory " + dir);
  state_ = machine.capture_state();
}

// Memory, then the state file last.
pb::SnapshotResult SnapshotWrite::write(const std::atomic<bool>& cancel) {
  *state_.mutable_memory() =
      write_memory_image(memory_.fd(), memory_.host_base(), memory_.size(), memory_file_.get(),
                         dir_ + "/" + kMemoryFile, kMemoryFile, &cancel);
  std::string payload;
  if (!state_.SerializeToString(&payload))
    throw std::runtime_error("cannot serialize the VM state");
  if (cancel.load()) throw std::runtime_error("snapshot " + dir_ + " abandoned");
  write_state_file(directory_.get(), kStateFile, payload, "snapshot directory " + dir_);

  pb::SnapshotResult result;
  result.set_dir(dir_);
  result.set_bytes_written(state_.memory().bytes_written() + payload.size());
  result.set_memory_pages_written(state_.memory().bytes_written() / 4096);
  result.set_duration_ms(ms_since(begin_));
  return result;
}

pb::SnapshotResult write_snapshot(MigratableMachine& machine, const SnapshotRoot& root,
                                  const std::string& dir) {
  const std::atomic<bool> never{false};
  return SnapshotWrite(machine, root, dir).write(never);
}

}  // namespace keel
