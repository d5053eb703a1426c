#include "vmm/state/kvm_state_caps.h"

#include <algorithm>

#include "common/error.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/state/cpu_features.h"

namespace keel {

namespace {

// What a scratch vCPU shows of how this KVM treats what a VMM sets.
struct ScratchVcpuFindings {
  bool guest_sees_host_cpuid;
  bool guest_tsc_is_host;
};

ScratchVcpuFindings ask_scratch_vcpu(const kvm::System& kvm,
                                     const std::vector<kvm_cpuid_entry2>& supported) {
  kvm::Vm scratch = kvm.create_vm();
  kvm::Vcpu vcpu = scratch.create_vcpu(0);
  // A KVM that intercepts CPUID holds the CPUID set (up to the bits that
  // follow guest state, which cpu_features_of masks); PVM answers
  // KVM_GET_CPUID2 with the host's values.
  vcpu.set_cpuid(supported);
  const bool host_cpuid = cpu_features_of(supported, 0, 0).SerializeAsString() !=
                          cpu_features_of(vcpu.get_cpuid(), 0, 0).SerializeAsString();
  // An offset moved by 2^40 cycles reads back moved, unless KVM ignores it.
  bool host_tsc = false;
  if (const auto offset = vcpu.get_tsc_offset()) {
    vcpu.set_tsc_offset(*offset - (uint64_t{1} << 40));
    host_tsc = vcpu.get_tsc_offset() == offset;
  }
  return {host_cpuid, host_tsc};
}

}  // namespace

KvmStateCaps KvmStateCaps::probe(const kvm::System& kvm, const kvm::Vm& vm) {
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
  const auto supported = kvm.supported_cpuid();
  const ScratchVcpuFindings found = ask_scratch_vcpu(kvm, supported);
  caps.guest_sees_host_cpuid = found.guest_sees_host_cpuid;
  caps.guest_tsc_is_host = found.guest_tsc_is_host;
  caps.offered_cpuid = caps.guest_sees_host_cpuid ? host_feature_leaves() : supported;
  return caps;
}

bool KvmStateCaps::saves_msr(uint32_t index) const {
  return std::find(msr_indices.begin(), msr_indices.end(), index) != msr_indices.end();
}

}  // namespace keel
