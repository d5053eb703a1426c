#include "devices/cmos_rtc.h"

#include <algorithm>

namespace keel {

namespace {
// MC146818 registers.
constexpr uint8_t kSeconds = 0x00, kMinutes = 0x02, kHours = 0x04, kWeekday = 0x06;
constexpr uint8_t kDay = 0x07, kMonth = 0x08, kYear = 0x09;
constexpr uint8_t kRegA = 0x0a, kRegB = 0x0b, kRegC = 0x0c, kRegD = 0x0d;
constexpr uint8_t kCentury = CmosRtc::kCenturyIndex;
constexpr uint8_t kRegBSet = 0x80, kRegBBinary = 0x04, kRegB24h = 0x02;
constexpr uint8_t kRegDValid = 0x80;  // VRT: battery fine, time valid
constexpr uint8_t kIndexMask = 0x7f;  // bit 7 of the index port gates NMI
}  // namespace

CmosRtc::CmosRtc(Clock clock) : clock_(std::move(clock)) {
  ram_[kRegA] = 0x26;  // 32.768 kHz time base, 1024 Hz rate; UIP never set
  ram_[kRegB] = kRegB24h;
  ram_[kRegD] = kRegDValid;
}

uint8_t CmosRtc::encode(unsigned value) const {
  if (ram_[kRegB] & kRegBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

unsigned CmosRtc::decode(uint8_t value) const {
  if (ram_[kRegB] & kRegBBinary) return value;
  return (value >> 4) * 10 + (value & 0x0f);
}

std::tm CmosRtc::guest_time() const {
  std::time_t t = clock_() + offset_seconds_;
  std::tm out{};
  gmtime_r(&t, &out);
  return out;
}

void CmosRtc::pio_read(uint16_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (data.size() != 1) return;
  data[0] = offset == 0 ? index_ : read_register(index_);
}

void CmosRtc::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1) return;
  if (offset == 0) {
    index_ = data[0] & kIndexMask;
  } else {
    write_register(index_, data[0]);
  }
}

uint8_t CmosRtc::read_register(uint8_t index) {
  bool set = ram_[kRegB] & kRegBSet;
  auto tm = set ? pending_ : guest_time();
  switch (index) {
    case kSeconds: return encode(static_cast<unsigned>(tm.tm_sec));
    case kMinutes: return encode(static_cast<unsigned>(tm.tm_min));
    case kHours: {
      unsigned h = static_cast<unsigned>(tm.tm_hour);
      if (ram_[kRegB] & kRegB24h) return encode(h);
      // 12-hour mode: 1..12 with bit 7 for PM.
      uint8_t pm = h >= 12 ? 0x80 : 0;
      unsigned h12 = h % 12 == 0 ? 12 : h % 12;
      return static_cast<uint8_t>(encode(h12) | pm);
    }
    case kWeekday: return encode(static_cast<unsigned>(tm.tm_wday) + 1);
    case kDay: return encode(static_cast<unsigned>(tm.tm_mday));
    case kMonth: return encode(static_cast<unsigned>(tm.tm_mon) + 1);
    case kYear: return encode(static_cast<unsigned>(tm.tm_year + 1900) % 100);
    case kCentury: return encode(static_cast<unsigned>(tm.tm_year + 1900) / 100);
    case kRegC: {
      uint8_t flags = ram_[kRegC];
      ram_[kRegC] = 0;  // reading register C acknowledges its interrupt flags
      return flags;
    }
    default: return ram_[index];
  }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
  switch (index) {
    case kSeconds: pending_.tm_sec = static_cast<int>(decode(value)); break;
    case kMinutes: pending_.tm_min = static_cast<int>(decode(value)); break;
    case kHours: {
      if (ram_[kRegB] & kRegB24h) {
        pending_.tm_hour = static_cast<int>(decode(value));
      } else {
        unsigned h = decode(value & 0x7f) % 12;
        pending_.tm_hour = static_cast<int>(h + ((value & 0x80) ? 12 : 0));
      }
      break;
    }
    case kWeekday: break;  // derived from the date
    case kDay: pending_.tm_mday = static_cast<int>(decode(value)); break;
    case kMonth: pending_.tm_mon = static_cast<int>(decode(value)) - 1; break;
    case kYear:
      pending_.tm_year = (pending_.tm_year + 1900) / 100 * 100 + static_cast<int>(decode(value)) - 1900;
      break;
    case kCentury:
      pending_.tm_year = static_cast<int>(decode(value)) * 100 + (pending_.tm_year + 1900) % 100 - 1900;
      break;
    case kRegA: ram_[kRegA] = value & 0x7f; break;  // UIP is read-only
    case kRegB: {
      bool was_set = ram_[kRegB] & kRegBSet;
      bool now_set = value & kRegBSet;
      if (!was_set && now_set) pending_ = guest_time();
      ram_[kRegB] = value;
      if (was_set && !now_set) {
        // The guest finished setting the clock: keep its time from now on.
        std::tm t = pending_;
        offset_seconds_ = static_cast<int64_t>(timegm(&t)) - static_cast<int64_t>(clock_());
      }
      break;
    }
    case kRegC:
    case kRegD: break;  // read-only
    default: ram_[index] = value; break;
  }
}

}  // namespace keel
