// The CPU features a VM's state depends on, and the check a restoring host
// makes: every feature bit the guest saw must be one a guest may see here
// (KvmStateCaps::offered_cpuid), and its XSAVE area the same size.
//
// What a guest saw: its vCPU's CPUID as KVM holds it, which is what the VMM
// set where KVM intercepts CPUID (VMX, SVM). On PVM the guest's CPUID
// instruction reaches the host's CPU: the guest saw the host's own features
// (more than KVM_GET_SUPPORTED_CPUID lists), so those are recorded, and a
// PVM host offers its own. A snapshot from a host with a feature this one
// lacks is refused either way.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "proto/vcpu_state.pb.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/state/kvm_state_caps.h"

namespace keel {

// The feature leaves of a vCPU's CPUID: 1, 7.0, 7.1, 0xD.0, 0xD.1, 0x80000001.
state::v1::CpuFeatures cpu_features_of(const std::vector<kvm_cpuid_entry2>& cpuid,
                                       uint32_t xsave_size, uint32_t tsc_khz);

// The features the guest of `vcpu` sees (see above).
state::v1::CpuFeatures guest_cpu_features(const KvmStateCaps& caps, const kvm::Vcpu& vcpu);

// This host's own feature leaves, from the CPUID instruction.
std::vector<kvm_cpuid_entry2> host_feature_leaves();

// Names of the features `features` needs that `host` does not offer ("avx512f",
// "CPUID.(7,0).EBX[30]", "XSAVE component 7 (hi16_zmm)", "XSAVE area of 2688
// bytes (host: 4096)"); empty when the host has them all.
std::vector<std::string> missing_cpu_features(const state::v1::CpuFeatures& features,
                                              const KvmStateCaps& host);

// Throws InputError naming every missing feature.
void check_cpu_features(const state::v1::CpuFeatures& features, const KvmStateCaps& host);

}  // namespace keel
