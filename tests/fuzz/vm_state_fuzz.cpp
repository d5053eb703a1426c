// libFuzzer target: a snapshot's state file (keel-vmm --restore DIR reads
// DIR/state) is untrusted input. The path a restore takes through it before
// any KVM ioctl, with the real code:
//
//   1. read_state_file: header (magic, format version, length, CRC-32C);
//   2. the same bytes after the header, wrapped in a correct header (so the
//      fuzzer reaches the decoder without forging checksums): the reader must
//      give back exactly that payload; VmState::ParseFromString; its
//      configuration through config_for_restore (check_vm_config);
//   3. the memory image's description against a memory file of the guest's
//      size (read_memory_image: sizes, page size, extents, checksums);
//   4. every device state restored into a freshly built device of its kind
//      (UART, i8042, ACPI PM, CMOS RTC, pvpanic, PCI bus, host bridge,
//      virtio-pci with virtio-rng or virtio-blk over a memfd disk of the saved
//      capacity, on guest memory of the saved size); what a device accepts
//      must save into a state that a fresh device accepts again;
//   5. the irqchip, PIT, vCPU and CPU-feature validators (validate_irqchip,
//      validate_pit, validate_vcpu_state, missing_cpu_features) against
//      capabilities of a plausible host.
//
// Not covered: Machine::check_state_fits (the state against the machine's
// shape) needs a machine on /dev/kvm; virtio-net (needs a tap).
// Nothing may crash; refusals (InputError) are fine.
//
// Seeds (tests/fuzz/corpus/vm_state_fuzz): state files of real snapshots
// taken in the KVM test host (see make_vm_state_seeds.sh).
#include <cpuid.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "devices/pc/acpi_pm.h"
#include "devices/pc/cmos_rtc.h"
#include "devices/pc/i8042.h"
#include "devices/pc/pvpanic.h"
#include "devices/pc/uart8250.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/pci_host_bridge.h"
#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"
#include "proto/vm_state.pb.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/config/vmm_options.h"
#include "vmm/state/cpu_features.h"
#include "vmm/state/snapshot_memory.h"
#include "vmm/state/snapshot_state_file.h"
#include "vmm/state/vcpu_state.h"
#include "vmm/state/vm_state_kvm.h"

using namespace keel;
namespace st = keel::state::v1;

namespace {

// KEEL_FUZZ_VERBOSE=1: say which steps refused an input (to see how far a
// seed gets: a real snapshot's state should pass them all).
const bool verbose = std::getenv("KEEL_FUZZ_VERBOSE") != nullptr;

void refused(const char* step, const InputError& e) {
  if (verbose) __builtin_printf("%s refused: %s\n", step, e.what());
}

constexpr size_t kHeaderSize = 24;                 // magic, version u32, crc u32, length u64
constexpr uint64_t kMaxFuzzGuest = 1ull << 30;     // larger guests: memory and virtio steps skipped
constexpr uint64_t kMaxExtentBytes = 16ull << 20;  // bytes read per input, at most
constexpr uint64_t kMaxFuzzDisk = 1ull << 30;

// A file the code under test opens by path: a memfd, as /proc/self/fd/N.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (!fd_.valid()) throw_errno("memfd_create");
  }
  void set(const std::string& bytes) {
    FUZZ_CHECK(::ftruncate(fd_.get(), 0) == 0);
    FUZZ_CHECK(::pwrite(fd_.get(), bytes.data(), bytes.size(), 0) ==
               static_cast<ssize_t>(bytes.size()));
  }
  void resize(uint64_t size) {
    FUZZ_CHECK(::ftruncate(fd_.get(), 0) == 0);
    FUZZ_CHECK(::ftruncate(fd_.get(), static_cast<off_t>(size)) == 0);
  }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_.get()); }

 private:
  UniqueFd fd_;
};

MemFile& state_file() {
  static MemFile f("vm-state");
  return f;
}
MemFile& memory_file() {
  static MemFile f("vm-memory");
  return f;
}
MemFile& disk_file() {
  static MemFile f("vm-disk");
  return f;
}

std::string with_header(const std::string& payload) {
  std::string h(kHeaderSize, '\0');
  std::memcpy(h.data(), "KEELSNAP", 8);
  auto put = [&h](size_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) h[at + i] = static_cast<char>(v >> (8 * i));
  };
  put(8, kSnapshotFormatVersion, 4);
  put(12, crc32c(payload.data(), payload.size()), 4);
  put(16, payload.size(), 8);
  return h + payload;
}

uint32_t crc32c_of_zeros(uint64_t length) {
  static const std::vector<uint8_t> zeros(kMaxExtentBytes, 0);
  return crc32c(zeros.data(), std::min<uint64_t>(length, zeros.size()));
}

// --- a plausible host --------------------------------------------------------

kvm_cpuid_entry2 host_leaf(uint32_t function, uint32_t index) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  __cpuid_count(function, index, e.eax, e.ebx, e.ecx, e.edx);
  return e;
}

// The host: its supported CPUID is the input's first vCPU's CPUID (what a
// KVM accepted for it; this machine's own leaves when it has none), its
// saveable MSRs those that vCPU carries, its XSAVE size that of its XSAVE
// area. So a real snapshot passes, and mutations meet every check.
KvmStateCaps caps_for(const st::VmState& state) {
  KvmStateCaps caps;
  caps.sregs2 = true;
  caps.tsc_control = true;
  caps.tsc_deadline_timer = true;
  if (state.vcpus_size() > 0) {
    const auto& v = state.vcpus(0);
    for (const auto& e : v.cpuid()) {
      kvm_cpuid_entry2 k{};
      k.function = e.function();
      k.index = e.index();
      k.flags = e.flags();
      k.eax = e.eax();
      k.ebx = e.ebx();
      k.ecx = e.ecx();
      k.edx = e.edx();
      caps.offered_cpuid.push_back(k);
    }
    std::set<uint32_t> seen;
    for (const auto& m : v.msrs()) {
      if (seen.insert(m.index()).second) caps.msr_indices.push_back(m.index());
    }
    const size_t xsave = v.xsave().size();
    if (xsave >= 4096 && xsave <= 65536) caps.xsave_size = xsave;
  }
  if (caps.offered_cpuid.empty()) {
    for (auto [f, i] :
         {std::pair{1u, 0u}, {7u, 0u}, {7u, 1u}, {0xdu, 0u}, {0xdu, 1u}, {0x80000001u, 0u}}) {
      caps.offered_cpuid.push_back(host_leaf(f, i));
    }
  }
  return caps;
}

// The snapshot's memory is not in the input: the rings a restored virtio
// queue resumes on get the indexes a driver would have left there (avail
// and used idx as saved), so a real state passes and the restore goes on
// to re-activate the device.
void plant_ring_indexes(const st::VirtioPciState& state, GuestMemory& memory) {
  for (const auto& q : state.queues()) {
    if (!q.enabled() || !q.has_indexes()) continue;
    const uint64_t avail = q.driver() + virtio::kAvailIdxOffset,
                   used = q.device() + virtio::kUsedIdxOffset;
    if (memory.contains(avail, 2))
      memory.write_obj<uint16_t>(avail, static_cast<uint16_t>(q.indexes().last_avail_idx()));
    if (memory.contains(used, 2))
      memory.write_obj<uint16_t>(used, static_cast<uint16_t>(q.indexes().next_used_idx()));
  }
}

// --- devices -------------------------------------------------------------------

class NullMsi : public virtio::MsiSink {
 public:
  void send(uint16_t, uint64_t, uint32_t) override {}
};

// restore(state) into a fresh device from `make`; if accepted, its save()
// must restore into another fresh one.
template <typename Device, typename State>
void check_round_trip(std::function<std::unique_ptr<Device>()> make, const State& state) {
  auto first = make();
  try {
    first->restore(state);
  } catch (const InputError& e) {
    return refused("device", e);
  }
  const State again = first->save();
  auto second = make();
  try {
    second->restore(again);
  } catch (const InputError& e) {
    __builtin_printf("a saved state was refused: %s\n", e.what());
    __builtin_trap();
  }
}

void restore_virtio(const st::VirtioPciState& state, GuestMemory* memory) {
  if (!memory) memory = &fuzz::fuzz_memory();
  boost::asio::io_context events;
  NullMsi msi;
  std::unique_ptr<virtio::VirtioDevice> device;
  switch (state.device().kind_case()) {
    case st::VirtioDeviceState::kBlk: {
      const uint64_t sectors = state.device().blk().capacity_sectors();
      if (sectors == 0 || sectors > kMaxFuzzDisk / 512) return;
      disk_file().resize(sectors * 512);
      st::DiskConfig config;
      config.set_path(disk_file().path());
      config.set_readonly(state.device().blk().read_only());
      try {
        device = std::make_unique<virtio::VirtioBlkDevice>(events, config);
      } catch (const std::exception&) {
        return;  // the disk could not be opened here (not the state's fault)
      }
      break;
    }
    case st::VirtioDeviceState::kNet:
      if (verbose) __builtin_printf("virtio-net skipped (needs a tap)\n");
      return;
    default:
      device = std::make_unique<virtio::VirtioRngDevice>(events);
      break;
  }
  plant_ring_indexes(state, *memory);
  auto make = [&] {
    return std::make_unique<virtio::VirtioPciDevice>(*device, *memory, msi,
                                                     virtio::VirtioPciDevice::Hooks{[](bool) {}});
  };
  auto pci = make();
  try {
    pci->restore(state);
  } catch (const InputError& e) {
    return refused("virtio", e);
  }
  const st::VirtioPciState again = pci->save();
  pci.reset();  // the device serves one transport at a time
  auto second = make();
  try {
    second->restore(again);
  } catch (const InputError& e) {
    __builtin_printf("a saved virtio state was refused: %s\n", e.what());
    __builtin_trap();
  }
}

void restore_device(const st::DeviceState& d, GuestMemory* memory) {
  switch (d.device_case()) {
    case st::DeviceState::kUart:
      return check_round_trip<Uart8250>(
          [] { return std::make_unique<Uart8250>([](uint8_t) {}, [] {}); }, d.uart());
    case st::DeviceState::kI8042:
      return check_round_trip<I8042>([] { return std::make_unique<I8042>([] {}); }, d.i8042());
    case st::DeviceState::kAcpiPm:
      return check_round_trip<AcpiPm>(
          [] {
            return std::make_unique<AcpiPm>(
                5, [] {}, [](bool) {});
          },
          d.acpi_pm());
    case st::DeviceState::kCmosRtc:
      return check_round_trip<CmosRtc>(
          [] { return std::make_unique<CmosRtc>([] { return std::time_t{1700000000}; }); },
          d.cmos_rtc());
    case st::DeviceState::kPvpanic:
      return check_round_trip<PvPanic>([] { return std::make_unique<PvPanic>([](uint8_t) {}); },
                                       d.pvpanic());
    case st::DeviceState::kPciBus:
      return check_round_trip<PciBus>([] { return std::make_unique<PciBus>(); }, d.pci_bus());
    case st::DeviceState::kPciHostBridge:
      return check_round_trip<PciHostBridge>([] { return std::make_unique<PciHostBridge>(); },
                                             d.pci_host_bridge());
    case st::DeviceState::kVirtio:
      return restore_virtio(d.virtio(), memory);
    case st::DeviceState::DEVICE_NOT_SET:
      return;
  }
}

void refused_or_fine(const char* name, const std::function<void()>& step) {
  try {
    step();
  } catch (const InputError& e) {
    refused(name, e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);

  // 1. The input as a state file.
  state_file().set(input);
  refused_or_fine("state file", [] { (void)read_state_file(state_file().path()); });

  // 2. What follows the header, behind a correct header.
  const std::string payload = size >= kHeaderSize ? input.substr(kHeaderSize) : input;
  if (payload.size() > kMaxStatePayload) return 0;
  state_file().set(with_header(payload));
  FUZZ_CHECK(read_state_file(state_file().path()) == payload);
  st::VmState state;
  if (!state.ParseFromString(payload)) return 0;

  // 2b. Its configuration, as a restore takes it (with and without the
  // command line's disks and taps in place of its own).
  refused_or_fine("configuration", [&] { (void)config_for_restore(VmmOptions{}, state.config()); });
  refused_or_fine("configuration with replacements", [&] {
    VmmOptions options;
    for (int i = 0; i < state.config().disks_size(); ++i)
      options.config.add_disks()->set_path("/dev/null");
    for (int i = 0; i < state.config().nets_size(); ++i)
      options.config.add_nets()->set_tap("fuzz0");
    (void)config_for_restore(options, state.config());
  });

  // 3. Memory: a guest of the saved size, its memory file as long as the
  // image says (zeros: a checksum that holds is the fuzzer's doing).
  std::unique_ptr<GuestMemory> memory;
  const uint64_t guest = state.config().memory();
  if (guest >= (16ull << 20) && guest <= kMaxFuzzGuest && guest % 4096 == 0) {
    memory = std::make_unique<GuestMemory>(layout::guest_ram_regions(guest));
    uint64_t extent_bytes = 0;
    for (const auto& e : state.memory().extents())
      extent_bytes += std::min<uint64_t>(e.length(), kMaxExtentBytes);
    if (extent_bytes <= kMaxExtentBytes && state.memory().size() <= kMaxFuzzGuest) {
      memory_file().resize(state.memory().size());
      refused_or_fine("memory image", [&] {
        read_memory_image(state.memory(), memory_file().path(), memory->host_all_for_write().data(),
                          memory->size());
      });
      // The file holds zeros: with each extent's checksum made that of
      // zeros, the extent walk goes past the first one (bounds, order, reads).
      st::MemoryImage zeros = state.memory();
      for (auto& e : *zeros.mutable_extents()) {
        if (e.length() <= kMaxExtentBytes) e.set_crc32c(crc32c_of_zeros(e.length()));
      }
      memory = std::make_unique<GuestMemory>(layout::guest_ram_regions(guest));
      refused_or_fine("memory image (zeros)", [&] {
        read_memory_image(zeros, memory_file().path(), memory->host_all_for_write().data(),
                          memory->size());
      });
      // A refusal leaves the mapping to be thrown away: start again from zeros.
      memory = std::make_unique<GuestMemory>(layout::guest_ram_regions(guest));
    }
  }

  // 4. Devices.
  for (const auto& d : state.devices()) restore_device(d, memory.get());

  // 5. KVM-side state, validated as a restore does before any ioctl.
  refused_or_fine("irqchip", [&] { validate_irqchip(state.irqchip()); });
  refused_or_fine("pit", [&] { validate_pit(state.pit()); });
  const KvmStateCaps caps = caps_for(state);
  for (int i = 0; i < state.vcpus_size() && i < 256; ++i) {
    refused_or_fine("vcpu",
                    [&] { validate_vcpu_state(caps, static_cast<uint32_t>(i), state.vcpus(i)); });
  }
  (void)missing_cpu_features(state.cpu(), caps);
  refused_or_fine("cpu features", [&] { check_cpu_features(state.cpu(), caps); });
  return 0;
}
