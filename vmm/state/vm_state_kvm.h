// Capture and restore of a VM's KVM-side state outside its vCPUs: the
// in-kernel irqchip (both PICs, the IOAPIC), the PIT, the kvmclock.
//
// Restore order for a whole VM (the machine drives it): create the VM, its
// irqchip and PIT and its vCPUs as for a boot; restore_irqchip and
// restore_pit; restore_vcpu_state for each vCPU (vcpu_state.h); then
// restore_clock last, just before the vCPUs run again: KVM_SET_CLOCK makes
// every vCPU refresh its kvmclock page from the restored system-time MSR on
// its next entry, and the later it runs, the less of the restore itself the
// guest's clock sees. Capture while every vCPU is paused; capture_clock as
// the last step, so that the guest clock stops where the vCPUs stopped.
#pragma once

#include "proto/vcpu_state.pb.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel {

state::v1::IrqchipState capture_irqchip(const kvm::Vm& vm);
state::v1::PitState capture_pit(const kvm::Vm& vm);
state::v1::ClockState capture_clock(const kvm::Vm& vm);

// Each validates first (the validate_* below) and leaves KVM untouched on refusal.
void restore_irqchip(kvm::Vm& vm, const state::v1::IrqchipState& state);
void restore_pit(kvm::Vm& vm, const state::v1::PitState& state);
// Sets the kvmclock to state.clock: the guest's clock carries on from where it
// was captured (the time the VM spent stopped does not show).
void restore_clock(kvm::Vm& vm, const state::v1::ClockState& state);

// Need no KVM; throw InputError naming the problem.
void validate_irqchip(const state::v1::IrqchipState& state);
void validate_pit(const state::v1::PitState& state);

}  // namespace keel
