#include "devices/acpi_pm.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

struct AcpiPmFixture : ::testing::Test {
  int poweroffs = 0;
  AcpiPm pm{5, [this] { ++poweroffs; }};
  void wr16(uint16_t off, uint16_t v) {
    uint8_t b[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
    pm.pio_write(off, b);
  }
  uint16_t rd16(uint16_t off) {
    uint8_t b[2];
    pm.pio_read(off, b);
    return static_cast<uint16_t>(b[0] | b[1] << 8);
  }
};

TEST_F(AcpiPmFixture, S5WithSleepEnablePowersOff) {
  wr16(4, (5 << 10) | (1 << 13));
  EXPECT_EQ(poweroffs, 1);
  EXPECT_EQ(rd16(4) & (1 << 13), 0) << "SLP_EN reads as zero";
}

TEST_F(AcpiPmFixture, OtherSleepTypesOrNoEnableDoNothing) {
  wr16(4, 5 << 10);
  wr16(4, (3 << 10) | (1 << 13));
  EXPECT_EQ(poweroffs, 0);
}

TEST_F(AcpiPmFixture, SciEnabledFromTheStart) { EXPECT_EQ(rd16(4) & 1, 1); }

TEST_F(AcpiPmFixture, EnableRegisterHoldsValue) {
  wr16(2, 0x0100);
  EXPECT_EQ(rd16(2), 0x0100);
  EXPECT_EQ(rd16(0), 0);
}

}  // namespace
}  // namespace keel
