// One KVM virtual machine: memory slots, the in-kernel irqchip and PIT, vCPUs.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "common/unique_fd.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace keel::kvm {

class Vm {
 public:
  Vm(UniqueFd fd, size_t vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}

  void set_memory_slot(uint32_t slot, uint64_t guest_phys, uint64_t size, const void* host,
                       uint32_t flags = 0);
  // Dirty logging (api.rst: KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG,
  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2). With manual protect on, a get
  // reports the pages written since they were last cleared and leaves them
  // writable; a clear write-protects them again, so their next write is
  // logged. Bitmaps: bit p of word p / 64 is the slot's page p.
  void enable_manual_dirty_log_protect();
  // Registers the slot again with KVM_MEM_LOG_DIRTY_PAGES set or cleared.
  void set_dirty_logging(uint32_t slot, bool on);
  // `bitmap` is resized to the slot's pages, rounded up to 64.
  void get_dirty_log(uint32_t slot, std::vector<uint64_t>& bitmap) const;
  // Re-protects the pages set in `bitmap`, which covers `pages` pages from
  // `first_page` (a multiple of 64; `pages` too, unless it reaches the
  // slot's end).
  void clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t pages,
                       const std::vector<uint64_t>& bitmap);
  // The dirty ring instead (api.rst: KVM_CAP_DIRTY_LOG_RING, 8.29): each
  // vCPU publishes the pages it dirties in a ring of `bytes` (a power of two,
  // at most dirty_ring_max_bytes()); see kvm::DirtyRing. Before any vCPU
  // exists; the slots still need set_dirty_logging. A VM with a ring has no
  // dirty bitmap (KVM_GET_DIRTY_LOG fails).
  uint32_t dirty_ring_max_bytes() const;
  void enable_dirty_ring(uint32_t bytes);
  // Hands the entries collected from every ring back to KVM, which
  // write-protects those pages again; returns how many it reset.
  uint32_t reset_dirty_rings();
  // KVM needs a three-page region for the TSS and one for the identity map
  // on Intel; both lie in the reserved range below 4 GiB.
  void set_tss_address(uint64_t address);
  void set_identity_map_address(uint64_t address);
  void create_irqchip();
  void create_pit2();
  void set_irq_line(uint32_t irq, bool level);
  // State capture and restore (vmm/state/vm_state_kvm.h). `chip.chip_id` selects
  // KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE or _IOAPIC.
  void get_irqchip(kvm_irqchip& chip) const;
  void set_irqchip(const kvm_irqchip& chip);
  kvm_pit_state2 get_pit2() const;
  void set_pit2(const kvm_pit_state2& pit);
  kvm_clock_data get_clock() const;
  void set_clock(const kvm_clock_data& clock);
  // KVM_CHECK_EXTENSION on the VM (some answers, like KVM_CAP_XSAVE2, are per VM); 0 when absent.
  int check_extension(long capability) const;
  // Replaces the whole GSI routing table.
  void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& routes);
  // KVM_IRQFD: a write to `eventfd` raises `gsi` (by its route) in the guest.
  void assign_irqfd(int eventfd, uint32_t gsi);
  // KVM_IOEVENTFD for guest MMIO writes of `length` bytes (0: any length,
  // KVM_CAP_IOEVENTFD_ANY_LENGTH) at `address`: the write completes in the
  // kernel and signals `eventfd`, with no exit to the VMM.
  void assign_mmio_ioeventfd(uint64_t address, uint32_t length, int eventfd);
  void deassign_mmio_ioeventfd(uint64_t address, uint32_t length, int eventfd);
  Vcpu create_vcpu(uint32_t id);
  int fd() const { return fd_.get(); }
  uint32_t dirty_ring_bytes() const { return dirty_ring_bytes_; }  // 0: no ring

 private:
  UniqueFd fd_;
  size_t vcpu_mmap_size_;
  uint32_t dirty_ring_bytes_ = 0;
  std::map<uint32_t, kvm_userspace_memory_region> slots_;  // as last registered
};

}  // namespace keel::kvm
