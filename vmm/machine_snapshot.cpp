// Machine, part four: snapshots, one client of the migratable seam
// (machine_state.cpp). Writing one (the vCPUs paused), and building a
// machine from one (keel-vmm --restore DIR). The state file is
// untrusted input: everything in it is checked before it is used, by the
// pieces that own it (devices, vCPU state, memory image).
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "vmm/state/cpu_features.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/machine.h"
#include "vmm/state/snapshot_memory.h"
#include "vmm/state/snapshot_state_file.h"
#include "vmm/state/vcpu_state.h"
#include "vmm/virtio_devices.h"
#include "vmm/state/vm_state_kvm.h"

namespace keel {

namespace pb = ::keel::api::v1;
namespace st = ::keel::state::v1;

namespace {

constexpr const char* kStateFile = "state";
constexpr const char* kMemoryFile = "memory";

uint64_t ms_since(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count());
}

}  // namespace

std::unique_ptr<st::VmState> Machine::load_snapshot(const VmmOptions& options) {
  if (options.restore_dir.empty()) return nullptr;
  const std::string payload = read_state_file(options.restore_dir + "/" + kStateFile);
  auto state = std::make_unique<st::VmState>();
  if (!state->ParseFromString(payload)) {
    throw InputError("snapshot state in " + options.restore_dir + " does not parse");
  }
  if (state->schema_version() != kVmStateSchemaVersion) {
    throw InputError("snapshot schema version " + std::to_string(state->schema_version()) +
                     " (this keel-vmm reads " + std::to_string(kVmStateSchemaVersion) + ")");
  }
  return state;
}

// The machine's shape from the snapshot, checked as the command line is;
// --disk and --net replace its disks and taps one for one.
VmmOptions Machine::effective_options(const VmmOptions& options, const st::VmState* snapshot) {
  if (!snapshot) return options;
  const st::VmConfig& c = snapshot->config();
  VmmOptions o = options;
  o.kernel = c.kernel();
  o.initrd = c.initrd();
  o.cmdline = c.cmdline();
  o.cpus = c.cpus();
  o.memory = c.memory();
  o.rng = c.rng();
  if (o.cpus == 0 || o.cpus > kMaxVcpus) throw InputError("snapshot: bad vCPU count " + std::to_string(o.cpus));
  if (o.memory < kMinGuestMemory || o.memory % 4096 != 0 || o.memory > (1ull << 46)) {
    throw InputError("snapshot: bad memory size " + std::to_string(o.memory));
  }
  if (static_cast<size_t>(snapshot->vcpus_size()) != o.cpus) {
    throw InputError("snapshot: " + std::to_string(snapshot->vcpus_size()) + " vCPU states for " +
                     std::to_string(o.cpus) + " vCPUs");
  }
  if (!options.disks.empty() && options.disks.size() != static_cast<size_t>(c.disks_size())) {
    throw InputError("--disk given " + std::to_string(options.disks.size()) +
                     " times; the snapshot has " + std::to_string(c.disks_size()) + " disks");
  }
  if (options.disks.empty()) {
    for (const auto& d : c.disks()) o.disks.push_back({d.path(), d.readonly()});
  }
  if (!options.nets.empty() && options.nets.size() != static_cast<size_t>(c.nets_size())) {
    throw InputError("--net given " + std::to_string(options.nets.size()) +
                     " times; the snapshot has " + std::to_string(c.nets_size()) + " network adapters");
  }
  // The guest knows its MAC: a replaced tap keeps the snapshot's.
  for (int i = 0; i < c.nets_size(); ++i) {
    const std::string& bytes = c.nets(i).mac();
    if (bytes.size() != 6) throw InputError("snapshot: network adapter " + std::to_string(i) + " has no MAC");
    MacAddress mac;
    std::copy(bytes.begin(), bytes.end(), mac.begin());
    if (options.nets.empty()) {
      o.nets.push_back({c.nets(i).tap(), mac});
    } else {
      o.nets[static_cast<size_t>(i)].mac = mac;
    }
  }
  if (o.disks.size() + o.nets.size() + (o.rng ? 1 : 0) > kMaxVirtioDevices) {
    throw InputError("snapshot: too many virtio devices");
  }
  return o;
}

// The shape is built (the constructor, from the snapshot's configuration):
// CPU features first (refuse before reading gigabytes), memory, then the
// state onto it (apply_state).
void Machine::restore_from(const st::VmState& snapshot, const std::string& dir) {
  const KvmStateCaps& caps = state_caps();
  check_cpu_features(snapshot.cpu(), caps);
  read_memory_image(snapshot.memory(), dir + "/" + kMemoryFile, memory_.host_all_for_write().data(),
                    memory_.size());
  apply_state(snapshot);
  // Said once the restore succeeded: a refused snapshot gets its one line.
  if (caps.guest_tsc_is_host) {
    std::fprintf(
        stderr,
        "keel-vmm: this host's KVM does not offset guest TSCs (PVM): the restored guest reads the "
        "host's TSC, so its clock counts the time since the snapshot\n");
  }
}

// With every vCPU parked: the state captured (devices quiesced first),
// memory written, then the state file last (its presence means a whole
// snapshot). The event loop is blocked meanwhile; the guest is paused anyway.
pb::SnapshotResult Machine::write_snapshot(const std::string& dir) {
  const auto begin = std::chrono::steady_clock::now();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError("cannot create snapshot directory " + dir + ": " + ec.message());
  if (std::filesystem::exists(dir + "/" + kStateFile)) {
    throw InputError("snapshot directory " + dir + " already holds a snapshot");
  }

  st::VmState state = capture_state();
  *state.mutable_memory() = write_memory_image(memory_.fd(), memory_.host_base(), memory_.size(),
                                               dir + "/" + kMemoryFile, kMemoryFile);
  std::string payload;
  if (!state.SerializeToString(&payload)) throw std::runtime_error("cannot serialize the VM state");
  write_state_file(dir + "/" + kStateFile, payload);

  pb::SnapshotResult result;
  result.set_dir(dir);
  result.set_bytes_written(state.memory().bytes_written() + payload.size());
  result.set_memory_pages_written(state.memory().bytes_written() / 4096);
  result.set_duration_ms(ms_since(begin));
  return result;
}

}  // namespace keel
