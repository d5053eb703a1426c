// The CPUID a vCPU sees: KVM's supported set with this vCPU's identity and
// the VM's topology filled in.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace keel {

struct CpuidOptions {
  uint32_t vcpu_count = 1;
  uint32_t tsc_khz = 0;  // 0: no timing leaf
  // KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates the TSC-deadline
  // mode, which KVM_GET_SUPPORTED_CPUID does not report by itself.
  bool tsc_deadline_timer = false;
};

// All vCPUs are cores of one socket, one thread each; the APIC ID is the
// vCPU index.
std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                             uint32_t vcpu_index, const CpuidOptions& options);

}  // namespace keel
