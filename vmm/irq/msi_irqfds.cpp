#include "vmm/irq/msi_irqfds.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <exception>

#include "common/error.h"
#include "common/log.h"

namespace keel {

MsiIrqfds::MsiIrqfds(kvm::Vm& vm, GsiRouter& router, uint16_t vectors)
    : vm_(vm), router_(router), vectors_(vectors) {}

void MsiIrqfds::bind(Vector& v, uint64_t address, uint32_t data) {
  if (!v.bound) {
    // The vector keeps its GSI even when a step below fails, so a guest
    // repeating a message KVM refuses cannot use up the routes.
    if (!v.has_gsi) {
      v.gsi = router_.allocate_msi_gsi();
      v.has_gsi = true;
    }
    // The route first: an irqfd is only bound to a GSI that has one.
    router_.set_msi_route(v.gsi, address, data);
    if (!v.eventfd.valid()) {
      UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd.valid()) throw_errno("eventfd for an MSI vector");
      vm_.assign_irqfd(fd.get(), v.gsi);
      v.eventfd = std::move(fd);
    }
    v.bound = true;
  } else {
    router_.set_msi_route(v.gsi, address, data);
  }
  v.address = address;
  v.data = data;
}

void MsiIrqfds::send(uint16_t vector, uint64_t address, uint32_t data) {
  if (vector >= vectors_.size()) return;
  Vector& v = vectors_[vector];
  try {
    if (!v.bound || v.address != address || v.data != data) bind(v, address, data);
    const uint64_t one = 1;
    // EAGAIN only when the counter is saturated: the interrupt is pending anyway.
    if (::write(v.eventfd.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
      throw_errno("raising an MSI through its irqfd");
    }
  } catch (const std::exception& e) {
    if (dropped_.fetch_add(1) == 0) {
      char where[96];
      std::snprintf(where, sizeof where, "MSI vector %u (address %#llx data %#x) dropped: ", vector,
                    static_cast<unsigned long long>(address), data);
      log::error(where + std::string(e.what()));
    }
  }
}

}  // namespace keel
