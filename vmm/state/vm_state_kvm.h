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
// was captured (the time the VM spent stopped does not show), or, with
// `advance_ns` (a live migration's time in transit, wall_time_in_transit),
// that much later.
void restore_clock(kvm::Vm& vm, const state::v1::ClockState& state, uint64_t advance_ns = 0);

// For a state with advance_by_wall_time: the wall time since its capture
// (CLOCK_REALTIME against its realtime), in ns; 0 for any other state, and
// for one whose capture time is in the future or over 10 minutes ago (the
// hosts' clocks disagree: the guest then continues from the capture, and
// keel-vmm says so).
uint64_t wall_time_in_transit(const state::v1::ClockState& state);

// Need no KVM; throw InputError naming the problem.
void validate_irqchip(const state::v1::IrqchipState& state);
void validate_pit(const state::v1::PitState& state);

}  // namespace keel
