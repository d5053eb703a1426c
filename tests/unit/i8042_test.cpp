#include "devices/pc/i8042.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

struct I8042Fixture : ::testing::Test {
  int resets = 0;
  I8042 dev{[this] { ++resets; }};
  uint8_t rd(uint16_t off) {
    uint8_t v;
    dev.pio_read(off, {&v, 1});
    return v;
  }
  void wr(uint16_t off, uint8_t v) { dev.pio_write(off, {&v, 1}); }
};

TEST_F(I8042Fixture, PulseResetCommandResets) {
  wr(4, 0xfe);
  EXPECT_EQ(resets, 1);
}

TEST_F(I8042Fixture, OutputPortBitZeroLowResets) {
  wr(4, 0xd1);
  wr(0, 0x03);
  EXPECT_EQ(resets, 0);
  wr(4, 0xd1);
  wr(0, 0x02);
  EXPECT_EQ(resets, 1);
}

TEST_F(I8042Fixture, SelfTestAndConfigByte) {
  wr(4, 0xaa);
  EXPECT_EQ(rd(4) & 1, 1);
  EXPECT_EQ(rd(0), 0x55);
  EXPECT_EQ(rd(4) & 1, 0);
  wr(4, 0x60);
  wr(0, 0x47);
  wr(4, 0x20);
  EXPECT_EQ(rd(0), 0x47);
}

TEST_F(I8042Fixture, KeyboardBytesWithoutCommandAreDropped) {
  wr(0, 0xff);
  EXPECT_EQ(rd(4) & 1, 0);
  EXPECT_EQ(resets, 0);
}

}  // namespace
}  // namespace keel
