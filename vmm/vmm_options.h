// keel-vmm's command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace keel {

struct VmmOptions {
  std::string kernel;
  std::string initrd;  // empty: none
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory = 512ull << 20;
  // --serial stdout (default) or file=PATH
  std::string serial_file;  // empty: stdout
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

}  // namespace keel
