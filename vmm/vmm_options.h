// keel-vmm's command line.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/net/mac_address.h"

namespace keel {

// --disk path=PATH[,readonly=on]
struct DiskSpec {
  std::string path;
  bool readonly = false;
};

// --net tap=NAME[,mac=MAC]
struct NetSpec {
  std::string tap;
  std::optional<MacAddress> mac;  // none: a locally administered one derived from the tap's name
};

struct VmmOptions {
  std::string kernel;
  std::string initrd;  // empty: none
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory = 512ull << 20;
  // --serial stdout (default) or file=PATH
  std::string serial_file;  // empty: stdout
  // virtio devices, on PCI slots 1.. in this order: disks (the first is the
  // guest's vda), network adapters, the entropy source.
  std::vector<DiskSpec> disks;
  std::vector<NetSpec> nets;
  bool rng = false;
  std::string api_socket;  // --api-socket PATH; empty: none
  // --restore DIR: the machine comes from a snapshot (its configuration,
  // memory and state); --disk and --net then replace the snapshot's disks
  // and taps one for one, --serial and --api-socket apply as usual.
  std::string restore_dir;
  bool help = false;
  // From KEEL_KVM_DEVICE, for tests that need a missing or broken KVM.
  std::string kvm_device = "/dev/kvm";
};

// Throws InputError with one line naming the bad argument. Checks only what
// needs no host knowledge; sizes against the host are checked at start-up.
VmmOptions parse_vmm_options(const std::vector<std::string>& args);

extern const char* const kVmmUsage;

inline constexpr uint64_t kMinGuestMemory = 16ull << 20;
inline constexpr uint32_t kMaxVcpus = 255;  // xAPIC IDs, one MADT entry each
inline constexpr size_t kMaxVirtioDevices = 24;  // PCI slots 1-24 on bus 0


}  // namespace keel
