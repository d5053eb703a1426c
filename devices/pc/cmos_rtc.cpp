#include "devices/pc/cmos_rtc.h"

#include <algorithm>

#include "common/state_check.h"

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
    case kSeconds:
      return encode(static_cast<unsigned>(tm.tm_sec));
    case kMinutes:
      return encode(static_cast<unsigned>(tm.tm_min));
    case kHours: {
      unsigned h = static_cast<unsigned>(tm.tm_hour);
      if (ram_[kRegB] & kRegB24h) return encode(h);
      // 12-hour mode: 1..12 with bit 7 for PM.
      uint8_t pm = h >= 12 ? 0x80 : 0;
      unsigned h12 = h % 12 == 0 ? 12 : h % 12;
      return static_cast<uint8_t>(encode(h12) | pm);
    }
    case kWeekday:
      return encode(static_cast<unsigned>(tm.tm_wday) + 1);
    case kDay:
      return encode(static_cast<unsigned>(tm.tm_mday));
    case kMonth:
      return encode(static_cast<unsigned>(tm.tm_mon) + 1);
    case kYear:
      return encode(static_cast<unsigned>(tm.tm_year + 1900) % 100);
    case kCentury:
      return encode(static_cast<unsigned>(tm.tm_year + 1900) / 100);
    case kRegC: {
      uint8_t flags = ram_[kRegC];
      ram_[kRegC] = 0;  // reading register C acknowledges its interrupt flags
      return flags;
    }
    default:
      return ram_[index];
  }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
  switch (index) {
    case kSeconds:
      pending_.tm_sec = static_cast<int>(decode(value));
      break;
    case kMinutes:
      pending_.tm_min = static_cast<int>(decode(value));
      break;
    case kHours: {
      if (ram_[kRegB] & kRegB24h) {
        pending_.tm_hour = static_cast<int>(decode(value));
      } else {
        unsigned h = decode(value & 0x7f) % 12;
        pending_.tm_hour = static_cast<int>(h + ((value & 0x80) ? 12 : 0));
      }
      break;
    }
    case kWeekday:
      break;  // derived from the date
    case kDay:
      pending_.tm_mday = static_cast<int>(decode(value));
      break;
    case kMonth:
      pending_.tm_mon = static_cast<int>(decode(value)) - 1;
      break;
    case kYear:
      // Only the year within the century: an invalid BCD byte (decoding past
      // 99) must not carry into the century, or repeated writes would push
      // the year without bound.
      pending_.tm_year =
          (pending_.tm_year + 1900) / 100 * 100 + static_cast<int>(decode(value) % 100) - 1900;
      break;
    case kCentury:
      pending_.tm_year =
          static_cast<int>(decode(value)) * 100 + (pending_.tm_year + 1900) % 100 - 1900;
      break;
    case kRegA:
      ram_[kRegA] = value & 0x7f;
      break;  // UIP is read-only
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
    case kRegD:
      break;  // read-only
    default:
      ram_[index] = value;
      break;
  }
}

state::v1::CmosRtcState CmosRtc::save() const {
  state::v1::CmosRtcState s;
  s.set_ram(std::string(ram_.begin(), ram_.end()));
  s.set_index(index_);
  s.set_offset_seconds(offset_seconds_);
  s.set_pending_sec(pending_.tm_sec);
  s.set_pending_min(pending_.tm_min);
  s.set_pending_hour(pending_.tm_hour);
  s.set_pending_mday(pending_.tm_mday);
  s.set_pending_mon(pending_.tm_mon);
  s.set_pending_year(pending_.tm_year);
  return s;
}

void CmosRtc::restore(const state::v1::CmosRtcState& s) {
  const std::string name = "cmos-rtc";
  if (s.ram().size() != ram_.size()) {
    refuse_state(name, "ram", "has " + std::to_string(s.ram().size()) + " bytes, not 128");
  }
  if (s.index() > kIndexMask)
    refuse_state(name, "index", std::to_string(s.index()) + " is past 127");
  if (static_cast<uint8_t>(s.ram()[kRegA]) & 0x80)
    refuse_state(name, "ram", "register A has UIP set");
  // Register D is read-only, VRT always set.
  if (static_cast<uint8_t>(s.ram()[kRegD]) != kRegDValid)
    refuse_state(name, "ram", "register D is not 0x80");
  // About 35000 years either way: far beyond what a guest can set (a BCD
  // century tops out at 165), and no overflow when added to the host's time.
  constexpr int64_t kMaxOffset = int64_t{1} << 40;
  if (s.offset_seconds() > kMaxOffset || s.offset_seconds() < -kMaxOffset) {
    refuse_state(name, "offset_seconds", "is out of range");
  }
  // What decode() can produce from a byte: at most 255 (binary mode; BCD
  // tops out at 165).
  auto field = [&](int32_t v, int32_t low, int32_t high, const char* what) {
    if (v < low || v > high) refuse_state(name, what, std::to_string(v) + " is out of range");
    return static_cast<int>(v);
  };
  std::tm pending{};
  pending.tm_sec = field(s.pending_sec(), 0, 255, "pending_sec");
  pending.tm_min = field(s.pending_min(), 0, 255, "pending_min");
  pending.tm_hour = field(s.pending_hour(), 0, 255, "pending_hour");
  pending.tm_mday = field(s.pending_mday(), 0, 255, "pending_mday");
  pending.tm_mon = field(s.pending_mon(), -1, 254, "pending_mon");
  // A year the guest writes is at most 25599 (century 255, year 99); the
  // clock read back from a guest time may add up to 22 years of months,
  // days and hours past their range, or step back into year -1 (month or
  // day 0), and keeps running on the host's clock: allow a margin.
  pending.tm_year = field(s.pending_year(), -1 - 1900, 25999 - 1900, "pending_year");
  std::copy(s.ram().begin(), s.ram().end(), ram_.begin());
  index_ = static_cast<uint8_t>(s.index());
  offset_seconds_ = s.offset_seconds();
  pending_ = pending;
}

}  // namespace keel
