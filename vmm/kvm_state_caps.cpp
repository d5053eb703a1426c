#include "vmm/kvm_state_caps.h"

#include <algorithm>

#include "common/error.h"
#include "vmm/kvm_system.h"
#include "vmm/kvm_vm.h"

namespace keel {

KvmStateCaps KvmStateCaps::probe(const KvmSystem& kvm, const KvmVm& vm) {
  KvmStateCaps caps;
  caps.msr_indices = kvm.msr_index_list();
  for (long cap : {KVM_CAP_XSAVE, KVM_CAP_XCRS, KVM_CAP_VCPU_EVENTS, KVM_CAP_DEBUGREGS,
                   KVM_CAP_ADJUST_CLOCK, KVM_CAP_MP_STATE}) {
    if (vm.check_extension(cap) <= 0) {
      throw InputError("KVM lacks capability " + std::to_string(cap) +
                       ", needed to capture and restore VM state");
    }
  }
  // The size is per VM (it depends on the XSAVE features this process may
  // give guests): ask the VM.
  int xsave2 = vm.check_extension(KVM_CAP_XSAVE2);
  caps.xsave2 = xsave2 > 0;
  caps.xsave_size = caps.xsave2 ? static_cast<size_t>(std::max(xsave2, 4096)) : 4096;
  caps.sregs2 = vm.check_extension(KVM_CAP_SREGS2) > 0;
  caps.tsc_control = vm.check_extension(KVM_CAP_TSC_CONTROL) > 0;
  caps.tsc_deadline_timer = vm.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  caps.supported_cpuid = kvm.supported_cpuid();
  return caps;
}

bool KvmStateCaps::saves_msr(uint32_t index) const {
  return std::find(msr_indices.begin(), msr_indices.end(), index) != msr_indices.end();
}

}  // namespace keel
