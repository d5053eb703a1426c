#include "vmm/irq/irq_routing.h"

namespace keel {

namespace {

kvm_irq_routing_entry irqchip_route(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = chip;
  e.u.irqchip.pin = pin;
  return e;
}

}  // namespace

std::vector<kvm_irq_routing_entry> legacy_irq_routing() {
  std::vector<kvm_irq_routing_entry> routes;
  // IRQ 2 is the cascade from the slave PIC: no device raises it.
  for (uint32_t irq = 0; irq < 16; ++irq) {
    if (irq == 2) continue;
    routes.push_back(
        irqchip_route(irq, irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, irq % 8));
  }
  for (uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
    if (gsi == 2) continue;
    routes.push_back(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi));
  }
  return routes;
}

}  // namespace keel
