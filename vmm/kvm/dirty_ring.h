// One vCPU's dirty ring (api.rst: KVM_CAP_DIRTY_LOG_RING, 8.29): KVM
// appends (slot, page) for each page the vCPU dirties; the VMM collects the
// entries and marks them for reset, then Vm::reset_dirty_rings re-protects
// those pages. When the ring fills up, the vCPU exits with
// KVM_EXIT_DIRTY_RING_FULL until it is collected and reset. Kept beside the
// bitmap (kvm::DirtyLog) so that migration can compare the two.
#pragma once

#include <cstdint>
#include <functional>

#include "common/memory_mapping.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel::kvm {

class DirtyRing {
 public:
  // Maps the ring of `vcpu`, of a VM with Vm::enable_dirty_ring done.
  DirtyRing(const Vm& vm, const Vcpu& vcpu);

  // Calls visit(slot, page in the slot) for each entry KVM has published
  // since the last collect, in order, and marks each collected (reset by the
  // next Vm::reset_dirty_rings). A slot KVM names beyond its own (the
  // address-space id in the upper half) is passed on as it is: the caller
  // checks it against its slots. Returns how many it collected.
  uint32_t collect(const std::function<void(uint32_t slot, uint64_t page)>& visit);

  uint32_t entries() const { return entries_; }

 private:
  MemoryMapping ring_;
  uint32_t entries_;
  uint32_t fetch_ = 0;  // the next entry to look at, counting from 0 forever
};

}  // namespace keel::kvm
