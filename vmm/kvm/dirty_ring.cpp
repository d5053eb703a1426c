#include "vmm/kvm/dirty_ring.h"

#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

#include "common/error.h"

namespace keel::kvm {

DirtyRing::DirtyRing(const Vm& vm, const Vcpu& vcpu)
    : entries_(vm.dirty_ring_bytes() / sizeof(kvm_dirty_gfn)) {
  if (vm.dirty_ring_bytes() == 0) throw_errno(EINVAL, "dirty ring: the VM has none enabled");
  const long page = ::sysconf(_SC_PAGESIZE);
  ring_ = MemoryMapping::map(vm.dirty_ring_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.fd(),
                             static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET) * page,
                             "the vCPU's dirty ring");
}

// KVM writes slot and offset, then sets DIRTY with a release store; the
// VMM reads flags with acquire, then the entry, then sets RESET with a
// release store (api.rst 8.29).
uint32_t DirtyRing::collect(const std::function<void(uint32_t slot, uint64_t page)>& visit) {
  auto* gfns = ring_.as<kvm_dirty_gfn>();
  uint32_t collected = 0;
  while (collected < entries_) {
    kvm_dirty_gfn& gfn = gfns[fetch_ & (entries_ - 1)];
    std::atomic_ref<uint32_t> flags(gfn.flags);
    if (!(flags.load(std::memory_order_acquire) & KVM_DIRTY_GFN_F_DIRTY)) break;
    visit(gfn.slot, gfn.offset);
    flags.store(KVM_DIRTY_GFN_F_RESET, std::memory_order_release);
    ++fetch_;
    ++collected;
  }
  return collected;
}

}  // namespace keel::kvm
