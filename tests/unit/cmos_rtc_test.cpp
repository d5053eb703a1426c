#include "devices/pc/cmos_rtc.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

struct RtcFixture : ::testing::Test {
  std::time_t now = 1795593600;  // 2026-11-25 08:00:00 UTC
  CmosRtc rtc{[this] { return now; }};
  uint8_t rd(uint8_t index) {
    uint8_t v = index;
    rtc.pio_write(0, {&v, 1});
    rtc.pio_read(1, {&v, 1});
    return v;
  }
  void wr(uint8_t index, uint8_t value) {
    rtc.pio_write(0, {&index, 1});
    rtc.pio_write(1, {&value, 1});
  }
};

TEST_F(RtcFixture, ReadsHostUtcInBcd) {
  EXPECT_EQ(rd(0x00), 0x00);
  EXPECT_EQ(rd(0x02), 0x00);
  EXPECT_EQ(rd(0x04), 0x08);
  EXPECT_EQ(rd(0x07), 0x25);
  EXPECT_EQ(rd(0x08), 0x11);
  EXPECT_EQ(rd(0x09), 0x26);
  EXPECT_EQ(rd(0x32), 0x20);
  EXPECT_EQ(rd(0x0d) & 0x80, 0x80) << "time valid";
  EXPECT_EQ(rd(0x0a) & 0x80, 0) << "never in an update";
}

TEST_F(RtcFixture, BinaryAnd12HourModes) {
  wr(0x0b, 0x04);         // binary, 12-hour
  now += 13 * 3600 + 61;  // 21:01:01
  EXPECT_EQ(rd(0x00), 1);
  EXPECT_EQ(rd(0x02), 1);
  EXPECT_EQ(rd(0x04), 0x80 | 9);
}

TEST_F(RtcFixture, GuestSetsTheClockAndItKeepsRunning) {
  wr(0x0b, 0x82);  // SET, BCD, 24h
  wr(0x04, 0x23);
  wr(0x02, 0x59);
  wr(0x00, 0x50);
  wr(0x0b, 0x02);
  EXPECT_EQ(rd(0x04), 0x23);
  now += 20;
  EXPECT_EQ(rd(0x00), 0x10);
  EXPECT_EQ(rd(0x04), 0x00);
  EXPECT_EQ(rd(0x07), 0x26) << "past midnight: the next day";
}

// Found by port_io_fuzz: invalid BCD year bytes carried into the century, so
// repeated writes pushed the year without bound and the saved state was then
// refused by restore.
TEST_F(RtcFixture, ExtremeSettingsStayWithinWhatRestoreAccepts) {
  CmosRtc fresh{[this] { return now; }};
  for (uint8_t binary : {0x00, 0x04}) {
    wr(0x0b, 0x82 | binary);  // SET, BCD or binary
    wr(0x32, 0xff);           // century 165 or 255
    for (int i = 0; i < 200; ++i) wr(0x09, 0xff);
    EXPECT_NO_THROW(fresh.restore(rtc.save()));
    for (uint8_t index : {0x00, 0x02, 0x04, 0x07, 0x08}) wr(index, 0xff);
    wr(0x0b, 0x02 | binary);  // the clock runs from the latest time a guest can set
    wr(0x0b, 0x82 | binary);  // and is read back into the pending time
    EXPECT_NO_THROW(fresh.restore(rtc.save()));
  }
  wr(0x0b, 0x82);
  wr(0x32, 0x00);
  wr(0x09, 0x00);
  wr(0x08, 0x00);  // month 0 and day 0 of year 0: back into year -1
  wr(0x07, 0x00);
  wr(0x0b, 0x02);
  wr(0x0b, 0x82);
  EXPECT_NO_THROW(fresh.restore(rtc.save()));
}

TEST_F(RtcFixture, PlainCmosMemoryAndNmiBit) {
  wr(0x80 | 0x40, 0xab);  // bit 7 of the index is the NMI mask, not the index
  EXPECT_EQ(rd(0x40), 0xab);
}

}  // namespace
}  // namespace keel
