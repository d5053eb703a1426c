// MSI-X messages of one PCI function delivered through irqfds: each vector
// gets a GSI with an MSI route and an eventfd bound to it by KVM_IRQFD, so
// raising it is one eventfd write from any thread. The route follows the
// message the guest last programmed into the vector's table entry.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "common/unique_fd.h"
#include "devices/virtio/pci/msix_table.h"
#include "vmm/irq/gsi_router.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel {

class MsiIrqfds : public virtio::MsiSink {
 public:
  MsiIrqfds(kvm::Vm& vm, GsiRouter& router, uint16_t vectors);

  // Called with the function's lock held (MsixTable's owner serialises it).
  // A message KVM refuses (a guest's garbage address) is dropped and
  // counted, never thrown at the vCPU or the event loop.
  void send(uint16_t vector, uint64_t address, uint32_t data) override;

  uint64_t dropped() const { return dropped_.load(); }

 private:
  struct Vector {
    bool bound = false;  // route set and irqfd assigned
    bool has_gsi = false;
    uint32_t gsi = 0;
    UniqueFd eventfd;
    uint64_t address = 0;
    uint32_t data = 0;
  };
  void bind(Vector& v, uint64_t address, uint32_t data);

  kvm::Vm& vm_;
  GsiRouter& router_;
  std::vector<Vector> vectors_;
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace keel
