// The CPUID a vCPU sees: KVM's supported set with this vCPU's identity and
// the VM's topology filled in.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace keel {

// `tsc_khz` 0: no timing leaf. All vCPUs are cores of one socket, one
// thread each; the APIC ID is the vCPU index.
std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(const std::vector<kvm_cpuid_entry2>& supported,
                                             uint32_t vcpu_index, uint32_t vcpu_count,
                                             uint32_t tsc_khz);

}  // namespace keel
