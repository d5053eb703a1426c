// The guest's TSCs across a snapshot: exact and monotonic.
//
// A host write of IA32_TSC is not exact: KVM takes a value within one
// second of what it expects from the VM's last TSC write as an attempt to
// synchronise vCPUs and keeps its own offset instead (kvm_synchronize_tsc).
// A restored guest whose TSC was young could so see its TSC go backwards by
// up to a second, and every timeout it measured from before the snapshot
// fire at once. With KVM_VCPU_TSC_OFFSET (Linux 5.16+) the offsets are set
// exactly: capture records each vCPU's TSC at one common instant, restore
// sets each offset so that the TSCs continue from there, their differences
// kept to the cycle. Without the attribute, restore writes IA32_TSC as saved.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "proto/vcpu_state.pb.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace keel {

inline constexpr uint32_t kMsrIa32Tsc = 0x10;

// After capture_vcpu_state for each of `vcpus` (same order, all paused):
// sets states[i].tsc_at_capture where KVM has the attribute.
void capture_tsc(const std::vector<kvm::Vcpu>& vcpus, std::vector<state::v1::VcpuState*>& states);

// One restore's TSC reference: the host TSC (at the guest's rate) read once,
// on the first vCPU asked, after its TSC rate was set.
class TscRestore {
 public:
  // The offset that makes `vcpu`'s TSC read state.tsc_at_capture at the
  // reference instant; nullopt when the state has none or KVM lacks the
  // attribute (then IA32_TSC is written).
  std::optional<uint64_t> offset_for(const kvm::Vcpu& vcpu, const state::v1::VcpuState& state);
  // Every TSC continues `cycles` later than captured (a live migration's
  // time in transit).
  void advance(uint64_t cycles) { advance_ = cycles; }
  // Nanoseconds since the reference instant (0 before it): the clock set
  // after the vCPUs moves on by as much, so that kvmclock and the TSCs keep
  // the distance they had at capture (a guest's clocksource watchdog marks
  // the TSC unstable when they drift apart by more than about 100 us).
  uint64_t ns_since_reference() const;

 private:
  std::optional<uint64_t> host_tsc_;
  std::chrono::steady_clock::time_point reference_;
  uint64_t advance_ = 0;
};

}  // namespace keel
