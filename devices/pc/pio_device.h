// A device on the x86 I/O port bus.
#pragma once

#include <cstdint>
#include <span>

namespace keel {

class PioDevice {
 public:
  virtual ~PioDevice() = default;
  // `offset` is relative to the base the device was registered at. Accesses
  // are 1, 2 or 4 bytes wide, little-endian.
  virtual void pio_read(uint16_t offset, std::span<uint8_t> data) = 0;
  virtual void pio_write(uint16_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace keel
