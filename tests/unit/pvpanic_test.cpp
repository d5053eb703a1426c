#include "devices/pc/pvpanic.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(PvPanic, AdvertisesEventsAndReportsPanics) {
  int panics = 0;
  PvPanic dev([&](uint8_t) { ++panics; });
  uint8_t v = 0;
  dev.pio_read(0, {&v, 1});
  EXPECT_EQ(v, PvPanic::kPanicked | PvPanic::kCrashLoaded);
  uint8_t crash_loaded = PvPanic::kCrashLoaded;
  dev.pio_write(0, {&crash_loaded, 1});
  EXPECT_EQ(panics, 0);
  uint8_t panicked = PvPanic::kPanicked;
  dev.pio_write(0, {&panicked, 1});
  EXPECT_EQ(panics, 1);
}

}  // namespace
}  // namespace keel
