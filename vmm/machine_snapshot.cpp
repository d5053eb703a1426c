// Machine, part four: snapshots. Writing one (the vCPUs paused), and
// building a machine from one (keel-vmm --restore DIR). The state file is
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

constexpr uint32_t kSchemaVersion = 1;
constexpr const char* kStateFile = "state";
constexpr const char* kMemoryFile = "memory";

uint64_t ms_since(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count());
}

st::VmConfig config_of(const VmmOptions& o) {
  st::VmConfig c;
  c.set_kernel(o.kernel);
  c.set_initrd(o.initrd);
  c.set_cmdline(o.cmdline);
  c.set_cpus(o.cpus);
  c.set_memory(o.memory);
  for (const auto& d : o.disks) {
    auto* disk = c.add_disks();
    disk->set_path(d.path);
    disk->set_readonly(d.readonly);
  }
  for (const auto& n : o.nets) {
    auto* net = c.add_nets();
    net->set_tap(n.tap);
    const MacAddress mac = effective_mac(n);
    net->set_mac(std::string(mac.begin(), mac.end()));
  }
  c.set_rng(o.rng);
  return c;
}

}  // namespace

std::unique_ptr<st::VmState> Machine::load_snapshot(const VmmOptions& options) {
  if (options.restore_dir.empty()) return nullptr;
  const std::string payload = read_state_file(options.restore_dir + "/" + kStateFile);
  auto state = std::make_unique<st::VmState>();
  if (!state->ParseFromString(payload)) {
    throw InputError("snapshot state in " + options.restore_dir + " does not parse");
  }
  if (state->schema_version() != kSchemaVersion) {
    throw InputError("snapshot schema version " + std::to_string(state->schema_version()) +
                     " (this keel-vmm reads " + std::to_string(kSchemaVersion) + ")");
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

// The order: CPU features first (refuse before touching anything), memory,
// devices (the virtio queues read their rings from the restored memory),
// irqchip and PIT, the vCPUs (restore_vcpu_state keeps KVM's own order),
// the clock last, just before the vCPUs run.
void Machine::restore_machine(const st::VmState& snapshot, const std::string& dir) {
  const KvmStateCaps caps = KvmStateCaps::probe(kvm_, vm_);
  check_cpu_features(snapshot.cpu(), caps);
  read_memory_image(snapshot.memory(), dir + "/" + kMemoryFile, memory_.host_all_for_write().data(),
                    memory_.size());

  const size_t expected = 7 + virtio_.size();  // platform devices, then one per function
  if (static_cast<size_t>(snapshot.devices_size()) != expected) {
    throw InputError("snapshot: " + std::to_string(snapshot.devices_size()) + " device states, this machine has " +
                     std::to_string(expected) + " devices");
  }
  auto device = [&](int i, st::DeviceState::DeviceCase kind, const char* name) -> const st::DeviceState& {
    const auto& d = snapshot.devices(i);
    if (d.device_case() != kind) throw InputError(std::string("snapshot: device ") + std::to_string(i) + " is not the " + name);
    return d;
  };
  com1_->restore(device(0, st::DeviceState::kUart, "COM1 UART").uart());
  i8042_->restore(device(1, st::DeviceState::kI8042, "i8042").i8042());
  acpi_pm_->restore(device(2, st::DeviceState::kAcpiPm, "ACPI PM").acpi_pm());
  rtc_->restore(device(3, st::DeviceState::kCmosRtc, "CMOS RTC").cmos_rtc());
  pvpanic_->restore(device(4, st::DeviceState::kPvpanic, "pvpanic").pvpanic());
  pci_bus_.restore(device(5, st::DeviceState::kPciBus, "PCI bus").pci_bus());
  pci_host_bridge_.restore(device(6, st::DeviceState::kPciHostBridge, "PCI host bridge").pci_host_bridge());
  for (size_t f = 0; f < virtio_.size(); ++f) {
    const auto& d = device(static_cast<int>(7 + f), st::DeviceState::kVirtio, "virtio function");
    if (d.pci_slot() != f + 1) {
      throw InputError("snapshot: virtio function " + std::to_string(f) + " on slot " + std::to_string(d.pci_slot()));
    }
    virtio_[f]->restore(d.virtio());
  }

  validate_irqchip(snapshot.irqchip());
  validate_pit(snapshot.pit());
  for (size_t i = 0; i < vcpus_.size(); ++i) validate_vcpu_state(caps, vcpus_[i].id(), snapshot.vcpus(static_cast<int>(i)));
  restore_irqchip(vm_, snapshot.irqchip());
  restore_pit(vm_, snapshot.pit());
  TscRestore tsc;
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    restore_vcpu_state(caps, vcpus_[i], snapshot.vcpus(static_cast<int>(i)), tsc);
  }
  restore_clock(vm_, snapshot.clock());
  // Said once the restore succeeded: a refused snapshot gets its one line.
  if (caps.guest_tsc_is_host) {
    std::fprintf(
        stderr,
        "keel-vmm: this host's KVM does not offset guest TSCs (PVM): the restored guest reads the "
        "host's TSC, so its clock counts the time since the snapshot\n");
  }
}

// With every vCPU parked: devices quiesced and saved, KVM state captured,
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

  st::VmState state;
  state.set_schema_version(kSchemaVersion);
  *state.mutable_config() = config_of(options_);
  state.set_created_unix_ms(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count()));
  // Devices first: quiescing may complete requests into guest memory.
  *state.add_devices()->mutable_uart() = com1_->save();
  *state.add_devices()->mutable_i8042() = i8042_->save();
  *state.add_devices()->mutable_acpi_pm() = acpi_pm_->save();
  *state.add_devices()->mutable_cmos_rtc() = rtc_->save();
  *state.add_devices()->mutable_pvpanic() = pvpanic_->save();
  *state.add_devices()->mutable_pci_bus() = pci_bus_.save();
  *state.add_devices()->mutable_pci_host_bridge() = pci_host_bridge_.save();
  for (size_t f = 0; f < virtio_.size(); ++f) {
    auto* d = state.add_devices();
    d->set_pci_slot(static_cast<uint32_t>(f + 1));
    *d->mutable_virtio() = virtio_[f]->save();
  }

  const KvmStateCaps caps = KvmStateCaps::probe(kvm_, vm_);
  std::vector<st::VcpuState*> vcpu_states;
  for (auto& vcpu : vcpus_) {
    *state.add_vcpus() = capture_vcpu_state(caps, vcpu);
    vcpu_states.push_back(state.mutable_vcpus(state.vcpus_size() - 1));
  }
  capture_tsc(vcpus_, vcpu_states);
  *state.mutable_irqchip() = capture_irqchip(vm_);
  *state.mutable_pit() = capture_pit(vm_);
  *state.mutable_cpu() = guest_cpu_features(caps, vcpus_[0]);
  *state.mutable_clock() = capture_clock(vm_);

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
