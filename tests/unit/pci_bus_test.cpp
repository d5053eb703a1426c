#include "devices/pci/pci_bus.h"

#include <gtest/gtest.h>

#include "devices/pci/pci_host_bridge.h"

namespace keel {
namespace {

struct PciFixture : ::testing::Test {
  PciBus bus;
  PciHostBridge bridge;
  void SetUp() override { bus.add(0, bridge); }
  void select(unsigned slot, unsigned fn, unsigned reg) {
    uint32_t a = 0x80000000u | slot << 11 | fn << 8 | reg;
    uint8_t b[4] = {uint8_t(a), uint8_t(a >> 8), uint8_t(a >> 16), uint8_t(a >> 24)};
    bus.pio_write(0, b);
  }
  uint32_t read32() {
    uint8_t b[4];
    bus.pio_read(4, b);
    return b[0] | b[1] << 8 | b[2] << 16 | uint32_t(b[3]) << 24;
  }
};

TEST_F(PciFixture, HostBridgeIdAndClass) {
  select(0, 0, 0);
  EXPECT_EQ(read32(), 0x00081b36u);
  select(0, 0, 8);
  EXPECT_EQ(read32() >> 8, 0x060000u);
}

TEST_F(PciFixture, EmptySlotsAndFunctionsReadAllOnes) {
  select(1, 0, 0);
  EXPECT_EQ(read32(), 0xffffffffu);
  select(0, 1, 0);
  EXPECT_EQ(read32(), 0xffffffffu);
}

TEST_F(PciFixture, ByteAndWordAccessesInTheDataWindow) {
  select(0, 0, 0);
  uint8_t w[2];
  bus.pio_read(6, w);  // device ID at 0xCFE
  EXPECT_EQ(w[0] | w[1] << 8, 0x0008);
  uint8_t b;
  bus.pio_read(7, {&b, 1});
  EXPECT_EQ(b, 0x00);
  uint8_t too_wide[4];
  bus.pio_read(6, too_wide);  // would run past 0xCFF
  EXPECT_EQ(too_wide[0], 0xff);
}

TEST_F(PciFixture, ReadOnlyFieldsStayReadOnly) {
  select(0, 0, 0);
  uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
  bus.pio_write(4, junk);
  EXPECT_EQ(read32(), 0x00081b36u);
  select(0, 0, 4);
  uint8_t cmd[2] = {0x07, 0x00};
  bus.pio_write(4, cmd);
  EXPECT_EQ(read32() & 0xffff, 0x0007u);
}

TEST_F(PciFixture, DisabledAddressSelectsNothing) {
  uint8_t zero[4] = {};
  bus.pio_write(0, zero);
  EXPECT_EQ(read32(), 0xffffffffu);
}

TEST(PciBus, RefusesTakenOrBadSlots) {
  PciBus bus;
  PciHostBridge a, b;
  bus.add(0, a);
  EXPECT_THROW(bus.add(0, b), std::invalid_argument);
  EXPECT_THROW(bus.add(32, b), std::invalid_argument);
}

}  // namespace
}  // namespace keel
