// Capture and restore of one vCPU's complete KVM state (proto/vcpu_state.proto).
#pragma once

#include "proto/vcpu_state.pb.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/state/tsc_state.h"

namespace keel {

// The vCPU must be out of KVM_RUN (paused) and stay so; other vCPUs of the
// VM too (KVM_GET_VCPU_EVENTS is not safe against a running sibling). After
// an I/O, MMIO or MSR exit the vCPU must first re-enter KVM_RUN once (with
// immediate_exit set): KVM finishes such an exit only then, and the
// unfinished part is in no state a getter returns (api.rst, KVM_RUN).
state::v1::VcpuState capture_vcpu_state(const KvmStateCaps& caps, const kvm::Vcpu& vcpu);

// Restores `state` into a fresh vCPU (not run yet: KVM refuses a new CPUID
// after KVM_RUN) with the same id. Validates first (validate_vcpu_state), so
// a refused state leaves the vCPU untouched. The VM's CPU features
// (check_cpu_features) are checked through the vCPU's CPUID here too.
// `tsc`: one for all vCPUs of the restore, in vCPU order.
void restore_vcpu_state(const KvmStateCaps& caps, kvm::Vcpu& vcpu,
                        const state::v1::VcpuState& state, TscRestore& tsc);

// The checks restore makes before any ioctl; needs no KVM. Throws
// InputError naming the problem (unknown MSRs by index, missing features).
void validate_vcpu_state(const KvmStateCaps& caps, uint32_t vcpu_id,
                         const state::v1::VcpuState& state);

}  // namespace keel
