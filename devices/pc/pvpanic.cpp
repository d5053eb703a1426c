#include "devices/pc/pvpanic.h"

#include <algorithm>

namespace keel {

void PvPanic::pio_read(uint16_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (!data.empty()) data[0] = kPanicked | kCrashLoaded;
}

void PvPanic::pio_write(uint16_t, std::span<const uint8_t> data) {
  // CRASH_LOADED alone means a crash kernel takes over: the guest goes on.
  if (data.size() == 1 && (data[0] & kPanicked) && panic_) panic_(data[0]);
}

}  // namespace keel
