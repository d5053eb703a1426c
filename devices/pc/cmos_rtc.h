// The PC's CMOS RTC (MC146818): index port 0x70, data port 0x71. Time reads
// come from the host's UTC clock plus whatever offset the guest set; the
// rest of the 128 bytes is plain CMOS memory. No RTC interrupts (IRQ 8) yet.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <span>

#include "devices/pc/pio_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class CmosRtc : public PioDevice {
 public:
  static constexpr uint16_t kPort = 0x70;
  static constexpr uint16_t kPortCount = 2;
  static constexpr uint8_t kCenturyIndex = 0x32;  // as on PCs; the FADT names it
  using Clock = std::function<std::time_t()>;

  explicit CmosRtc(Clock clock = [] { return std::time(nullptr); });

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Snapshot (proto/device_state.proto): the RAM, the index and the guest's
  // offset from the host clock (time keeps coming from the host's clock).
  // restore() refuses what the guest could not have produced (InputError
  // naming the field). vCPUs stopped.
  state::v1::CmosRtcState save() const;
  void restore(const state::v1::CmosRtcState& state);

 private:
  uint8_t read_register(uint8_t index);
  void write_register(uint8_t index, uint8_t value);
  uint8_t encode(unsigned value) const;
  unsigned decode(uint8_t value) const;
  // Guest time of day broken down, now.
  std::tm guest_time() const;

  Clock clock_;
  std::array<uint8_t, 128> ram_{};
  uint8_t index_ = 0;
  int64_t offset_seconds_ = 0;  // guest time minus host time
  std::tm pending_{};           // time fields written while SET is on
};

}  // namespace keel
