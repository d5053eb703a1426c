// The pvpanic device (QEMU's ISA "pvpanic", ACPI HID QEMU0001, port 0x505):
// a guest writes PANICKED when it crashes, so the VMM can report a crash
// instead of keeping a dead guest running. Reads return the supported events.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/pc/pio_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class PvPanic : public PioDevice {
 public:
  static constexpr uint16_t kPort = 0x505;
  static constexpr uint8_t kPanicked = 1 << 0;
  static constexpr uint8_t kCrashLoaded = 1 << 1;

  using Panic = std::function<void(uint8_t events)>;
  explicit PvPanic(Panic panic) : panic_(std::move(panic)) {}

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Snapshot (proto/device_state.proto): nothing to keep.
  state::v1::PvPanicState save() const { return {}; }
  void restore(const state::v1::PvPanicState&) {}

 private:
  Panic panic_;
};

}  // namespace keel
