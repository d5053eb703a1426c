#include "vmm/irq/gsi_router.h"

#include <stdexcept>
#include <string>

#include "vmm/irq/irq_routing.h"

namespace keel {

GsiRouter::GsiRouter(kvm::Vm& vm, uint32_t max_routes)
    : vm_(vm), legacy_(legacy_irq_routing()), next_gsi_(kIoapicPins), max_routes_(max_routes) {
  std::lock_guard guard(mutex_);
  commit();
}

uint32_t GsiRouter::allocate_msi_gsi() {
  std::lock_guard guard(mutex_);
  // KVM's GSIs and routes share one limit; keep the legacy entries' room.
  if (legacy_.size() + msi_.size() >= max_routes_ || next_gsi_ >= max_routes_) {
    throw std::runtime_error("out of interrupt routes: KVM allows " + std::to_string(max_routes_));
  }
  return next_gsi_++;
}

void GsiRouter::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
  std::lock_guard guard(mutex_);
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_MSI;
  entry.u.msi.address_lo = static_cast<uint32_t>(address);
  entry.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  entry.u.msi.data = data;
  auto previous = msi_.find(gsi);
  const bool existed = previous != msi_.end();
  const kvm_irq_routing_entry old = existed ? previous->second : kvm_irq_routing_entry{};
  msi_[gsi] = entry;
  try {
    commit();
  } catch (...) {
    // Keep the table KVM has: a refused message must not poison the rest.
    if (existed) {
      msi_[gsi] = old;
    } else {
      msi_.erase(gsi);
    }
    throw;
  }
}

void GsiRouter::commit() {
  std::vector<kvm_irq_routing_entry> routes = legacy_;
  for (const auto& [gsi, entry] : msi_) routes.push_back(entry);
  vm_.set_gsi_routing(routes);
}

}  // namespace keel
