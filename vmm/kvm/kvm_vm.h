// One KVM virtual machine: memory slots, the in-kernel irqchip and PIT, vCPUs.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/unique_fd.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace keel {

class KvmVm {
 public:
  KvmVm(UniqueFd fd, size_t vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}

  void set_memory_slot(uint32_t slot, uint64_t guest_phys, uint64_t size, const void* host,
                       uint32_t flags = 0);
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
  KvmVcpu create_vcpu(uint32_t id);
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  size_t vcpu_mmap_size_;
};

}  // namespace keel
