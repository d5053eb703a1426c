#include "vmm/state/tsc_state.h"

#include <linux/kvm.h>

namespace keel {
namespace {

// The host TSC at the guest's rate, now: the vCPU's IA32_TSC minus its
// offset, read back to back (the offset does not change while the vCPU is
// out of KVM_RUN, so the pair describes the instant of the MSR read).
std::optional<uint64_t> host_tsc_at_guest_rate(const kvm::Vcpu& vcpu) {
  const auto offset = vcpu.get_tsc_offset();
  if (!offset) return std::nullopt;
  std::vector<kvm_msr_entry> tsc(1);
  tsc[0].index = kMsrIa32Tsc;
  if (vcpu.get_msrs(tsc) != 1) return std::nullopt;
  return tsc[0].data - *offset;  // modulo 2^64, as KVM computes it
}

}  // namespace

void capture_tsc(const std::vector<kvm::Vcpu>& vcpus, std::vector<state::v1::VcpuState*>& states) {
  if (vcpus.empty()) return;
  const auto host = host_tsc_at_guest_rate(vcpus[0]);
  if (!host) return;
  for (size_t i = 0; i < vcpus.size() && i < states.size(); ++i) {
    const auto offset = vcpus[i].get_tsc_offset();
    if (offset) states[i]->set_tsc_at_capture(*host + *offset);
  }
}

std::optional<uint64_t> TscRestore::offset_for(const kvm::Vcpu& vcpu,
                                               const state::v1::VcpuState& state) {
  if (!state.has_tsc_at_capture()) return std::nullopt;
  if (!host_tsc_) {
    host_tsc_ = host_tsc_at_guest_rate(vcpu);
    reference_ = std::chrono::steady_clock::now();
  }
  if (!host_tsc_) return std::nullopt;
  return state.tsc_at_capture() + advance_ - *host_tsc_;
}

uint64_t TscRestore::ns_since_reference() const {
  if (!host_tsc_) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now() - reference_)
                                   .count());
}

}  // namespace keel
