#include "devices/pc/acpi_pm.h"

#include <gtest/gtest.h>

#include <vector>

namespace keel {
namespace {

struct AcpiPmFixture : ::testing::Test {
  int poweroffs = 0;
  std::vector<bool> sci;
  AcpiPm pm{5, [this] { ++poweroffs; }, [this](bool level) { sci.push_back(level); }};
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

TEST_F(AcpiPmFixture, SciEnabledFromTheStart) {
  EXPECT_EQ(rd16(4) & 1, 1);
}

TEST_F(AcpiPmFixture, EnableRegisterHoldsValue) {
  wr16(2, 0x0100);
  EXPECT_EQ(rd16(2), 0x0100);
  EXPECT_EQ(rd16(0), 0);
}

TEST_F(AcpiPmFixture, PowerButtonRaisesTheSciOnlyWhenEnabled) {
  pm.press_power_button();
  EXPECT_EQ(rd16(0), AcpiPm::kPowerButtonStatus);
  EXPECT_TRUE(sci.empty()) << "PWRBTN_EN is clear";
  wr16(2, AcpiPm::kPowerButtonStatus);  // the OS enables the event: the pending press fires
  EXPECT_EQ(sci, std::vector<bool>{true});
  wr16(0, AcpiPm::kPowerButtonStatus);  // write-one-to-clear: the level drops
  EXPECT_EQ(rd16(0), 0);
  EXPECT_EQ(sci, (std::vector<bool>{true, false}));
  pm.press_power_button();
  EXPECT_EQ(sci, (std::vector<bool>{true, false, true}));
  wr16(0, 0);  // writing zeros clears nothing
  EXPECT_EQ(sci.size(), 3u);
  EXPECT_EQ(poweroffs, 0);
}

}  // namespace
}  // namespace keel
