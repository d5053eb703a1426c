// What this host's KVM offers for capturing and restoring VM state: the
// MSRs it saves, the XSAVE size, the optional ioctls, the CPUID a guest may
// see here. Restore checks a state against these before touching a vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel {

namespace kvm {
class System;
class Vm;
}  // namespace kvm

struct KvmStateCaps {
  std::vector<uint32_t> msr_indices;  // KVM_GET_MSR_INDEX_LIST, in KVM's order
  size_t xsave_size = 4096;           // the exact size of struct kvm_xsave here
  bool xsave2 = false;                // KVM_GET_XSAVE2 (KVM_CAP_XSAVE2)
  bool sregs2 = false;                // KVM_GET/SET_SREGS2 (KVM_CAP_SREGS2)
  bool tsc_control = false;           // KVM_SET_TSC_KHZ scales (KVM_CAP_TSC_CONTROL)
  bool tsc_deadline_timer = false;    // KVM_CAP_TSC_DEADLINE_TIMER
  // Whether guests here see the host's own CPUID whatever KVM_SET_CPUID2
  // said: a KVM that does not intercept the CPUID instruction (PVM; its
  // KVM_GET_CPUID2 then answers with the host's values, not the ones set).
  bool guest_sees_host_cpuid = false;
  // Whether guests here read the host's TSC whatever restore sets: a KVM
  // that does not offset guest TSCs (PVM takes KVM_VCPU_TSC_OFFSET and
  // IA32_TSC writes without effect). A restored guest's clock there counts
  // the time between capture and restore.
  bool guest_tsc_is_host = false;
  // The CPUID a guest may see here, which a state's CPU features must fit:
  // KVM_GET_SUPPORTED_CPUID, or the host's own feature leaves where
  // guest_sees_host_cpuid (a guest there used what the host has, which is
  // more than KVM_GET_SUPPORTED_CPUID says).
  std::vector<kvm_cpuid_entry2> offered_cpuid;

  static KvmStateCaps probe(const kvm::System& kvm, const kvm::Vm& vm);
  bool saves_msr(uint32_t index) const;
};

}  // namespace keel
