// The VM's GSI routing table: the PC's legacy routes (irq_routing.h) plus
// one MSI route per MSI-X vector in use, which the devices' irqfds point at.
// KVM_SET_GSI_ROUTING replaces the whole table, so every change goes through
// here. Thread-safe: vCPU threads and the event loop raise interrupts.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "vmm/kvm/kvm_vm.h"

namespace keel {

class GsiRouter {
 public:
  // Installs the legacy routing. `max_routes` is KVM_CAP_IRQ_ROUTING's answer.
  GsiRouter(kvm::Vm& vm, uint32_t max_routes);

  // A GSI above the I/O APIC's pins for an MSI route. Throws
  // std::runtime_error when KVM's table is full.
  uint32_t allocate_msi_gsi();
  // Points `gsi` (from allocate_msi_gsi) at an MSI message. Throws
  // std::system_error when KVM refuses the message.
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data);

 private:
  void commit();

  kvm::Vm& vm_;
  std::mutex mutex_;
  const std::vector<kvm_irq_routing_entry> legacy_;
  std::map<uint32_t, kvm_irq_routing_entry> msi_;
  uint32_t next_gsi_;
  uint32_t max_routes_;
};

}  // namespace keel
