#include "vmm/boot/cpuid.h"

#include <bit>

namespace keel {

namespace {

constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheTopology = 0x4;
constexpr uint32_t kLeafExtTopology = 0xb;
constexpr uint32_t kLeafV2ExtTopology = 0x1f;
constexpr uint32_t kLeafHypervisor = 0x40000000;
constexpr uint32_t kLeafHypervisorTiming = 0x40000010;
constexpr uint32_t kLeafAmdAddressSizes = 0x80000008;
constexpr uint32_t kLeafAmdTopology = 0x8000001e;

// Bits needed to number `count` things (0 for a single one).
uint32_t id_bits(uint32_t count) {
  return count <= 1 ? 0 : std::bit_width(count - 1);
}

}  // namespace

std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                             uint32_t vcpu_index, const CpuidOptions& options) {
  const uint32_t vcpu_count = options.vcpu_count;
  const uint32_t tsc_khz = options.tsc_khz;
  std::vector<kvm_cpuid_entry2> out;
  out.reserve(supported.size() + 1);
  const uint32_t apic_id = vcpu_index;
  bool has_timing_leaf = false;
  bool has_v2_topology = false;
  for (kvm_cpuid_entry2 e : supported) {
    switch (e.function) {
      case kLeafFeatures:
        // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
        e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | ((vcpu_count & 0xff) << 16);
        if (vcpu_count > 1) e.edx |= 1u << 28;  // HTT: the count above is valid
        e.ecx |= 1u << 31;                      // running under a hypervisor
        if (options.tsc_deadline_timer) e.ecx |= 1u << 24;
        break;
      case kLeafCacheTopology:
        // EAX[31:26]: APIC IDs reserved for cores in the package, minus one;
        // EAX[25:14]: logical processors sharing this cache, minus one (each
        // vCPU is a core of its own: zero).
        if (e.eax & 0x1f) {
          e.eax = (e.eax & 0x00003fff) | ((((1u << id_bits(vcpu_count)) - 1) & 0x3f) << 26);
        }
        break;
      case kLeafExtTopology:
      case kLeafV2ExtTopology:
        // Rebuilt below: current KVMs report only subleaf 0, all zeros, which
        // would make every vCPU a socket of its own.
        if (e.function == kLeafV2ExtTopology) has_v2_topology = true;
        continue;
      case kLeafAmdTopology:
        // AMD extended APIC ID and core ID (one thread per core, one node).
        e.eax = apic_id;
        e.ebx = apic_id & 0xff;
        e.ecx = 0;
        break;
      case kLeafHypervisor:
        if (tsc_khz != 0 && e.eax < kLeafHypervisorTiming) e.eax = kLeafHypervisorTiming;
        break;
      case kLeafHypervisorTiming:
        has_timing_leaf = true;
        if (tsc_khz != 0) {
          e.eax = tsc_khz;
          e.ebx = 1000000;  // KVM's LAPIC timer counts nanoseconds: 1 GHz
        }
        break;
      case kLeafAmdAddressSizes:
        // ECX[7:0]: cores per package minus one; ECX[15:12]: APIC ID bits.
        e.ecx = (e.ecx & ~0xf0ffu) | ((vcpu_count - 1) & 0xff) | (id_bits(vcpu_count) << 12);
        break;
      default:
        break;
    }
    out.push_back(e);
  }
  // Level 0: SMT (one thread per core), level 1: cores, level 2: invalid.
  for (uint32_t leaf : {kLeafExtTopology, kLeafV2ExtTopology}) {
    if (leaf == kLeafV2ExtTopology && !has_v2_topology) continue;
    for (uint32_t level = 0; level < 3; ++level) {
      kvm_cpuid_entry2 e{};
      e.function = leaf;
      e.index = level;
      e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      e.edx = apic_id;
      if (level == 0) {
        e.ebx = 1;
        e.ecx = (1u << 8) | level;
      } else if (level == 1) {
        e.eax = id_bits(vcpu_count);
        e.ebx = vcpu_count;
        e.ecx = (2u << 8) | level;
      } else {
        e.ecx = level;
      }
      out.push_back(e);
    }
  }
  if (tsc_khz != 0 && !has_timing_leaf) {
    kvm_cpuid_entry2 timing{};
    timing.function = kLeafHypervisorTiming;
    timing.eax = tsc_khz;
    timing.ebx = 1000000;
    out.push_back(timing);
  }
  return out;
}

}  // namespace keel
