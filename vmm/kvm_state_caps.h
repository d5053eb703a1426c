// What this host's KVM offers for capturing and restoring VM state: the
// MSRs it saves, the XSAVE size, the optional ioctls, the CPUID it supports.
// Restore checks a state against these before touching a vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel {

class KvmSystem;
class KvmVm;

struct KvmStateCaps {
  std::vector<uint32_t> msr_indices;  // KVM_GET_MSR_INDEX_LIST, in KVM's order
  size_t xsave_size = 4096;           // the exact size of struct kvm_xsave here
  bool xsave2 = false;                // KVM_GET_XSAVE2 (KVM_CAP_XSAVE2)
  bool sregs2 = false;                // KVM_GET/SET_SREGS2 (KVM_CAP_SREGS2)
  bool tsc_control = false;           // KVM_SET_TSC_KHZ scales (KVM_CAP_TSC_CONTROL)
  bool tsc_deadline_timer = false;    // KVM_CAP_TSC_DEADLINE_TIMER
  std::vector<kvm_cpuid_entry2> supported_cpuid;  // KVM_GET_SUPPORTED_CPUID

  static KvmStateCaps probe(const KvmSystem& kvm, const KvmVm& vm);
  bool saves_msr(uint32_t index) const;
};

}  // namespace keel
