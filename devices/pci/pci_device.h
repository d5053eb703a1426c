// A function on the emulated PCI bus, seen through its configuration space.
#pragma once

#include <cstdint>

namespace keel {

class PciDevice {
 public:
  virtual ~PciDevice() = default;
  // `offset` is dword-aligned within the 256-byte configuration space.
  virtual uint32_t config_read(uint16_t offset) = 0;
  // Only the bytes set in `byte_mask` (bit n: byte n of the dword) are written.
  virtual void config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) = 0;
};

}  // namespace keel
