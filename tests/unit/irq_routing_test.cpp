#include "vmm/irq/irq_routing.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

std::vector<std::pair<uint32_t, uint32_t>> targets(uint32_t gsi) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const auto& e : legacy_irq_routing()) {
    if (e.gsi == gsi) {
      EXPECT_EQ(e.type, static_cast<uint32_t>(KVM_IRQ_ROUTING_IRQCHIP));
      out.emplace_back(e.u.irqchip.irqchip, e.u.irqchip.pin);
    }
  }
  return out;
}

TEST(IrqRouting, PitIrqZeroReachesIoapicPinTwoAndThePic) {
  auto t = targets(0);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0], std::make_pair(uint32_t{KVM_IRQCHIP_PIC_MASTER}, 0u));
  EXPECT_EQ(t[1], std::make_pair(uint32_t{KVM_IRQCHIP_IOAPIC}, 2u));
}

TEST(IrqRouting, IsaIrqsGoToBothChipsOnTheirOwnPins) {
  auto com1 = targets(4);
  ASSERT_EQ(com1.size(), 2u);
  EXPECT_EQ(com1[0], std::make_pair(uint32_t{KVM_IRQCHIP_PIC_MASTER}, 4u));
  EXPECT_EQ(com1[1], std::make_pair(uint32_t{KVM_IRQCHIP_IOAPIC}, 4u));
  auto sci = targets(9);
  ASSERT_EQ(sci.size(), 2u);
  EXPECT_EQ(sci[0], std::make_pair(uint32_t{KVM_IRQCHIP_PIC_SLAVE}, 1u));
  EXPECT_EQ(sci[1], std::make_pair(uint32_t{KVM_IRQCHIP_IOAPIC}, 9u));
}

TEST(IrqRouting, CascadeHasNoRouteAndHighGsisAreIoapicOnly) {
  EXPECT_TRUE(targets(2).empty());
  auto t = targets(20);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0], std::make_pair(uint32_t{KVM_IRQCHIP_IOAPIC}, 20u));
  EXPECT_TRUE(targets(kIoapicPins).empty());
}

}  // namespace
}  // namespace keel
