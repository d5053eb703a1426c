// Routes guest port I/O to the device registered for the port range.
// Ports nobody claims read as all ones and ignore writes, like an ISA bus
// with nothing on it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "devices/pc/pio_device.h"

namespace keel {

class IoBus {
 public:
  // The device sees offsets from `device_offset` on. A device may be added
  // at several ranges (the i8042 at 0x60 and 0x64). Throws
  // std::invalid_argument when the range overlaps one already taken.
  void add(uint16_t base, uint16_t length, PioDevice& device, uint16_t device_offset = 0);
  // Both return false when no device claims `port`.
  bool read(uint16_t port, std::span<uint8_t> data);
  bool write(uint16_t port, std::span<const uint8_t> data);
  // Runs `task` holding the lock the bus serialises `device` with, so that
  // the VMM's own calls into it (console input) never race a vCPU's access.
  // Throws std::invalid_argument when the device is not on the bus.
  void with_device_locked(const PioDevice& device, const std::function<void()>& task);

 private:
  struct Range {
    uint32_t base;
    uint32_t length;
    uint16_t device_offset;
    PioDevice* device;
    // vCPU threads may reach one device at once; each device is serialised
    // by one lock, shared by all its ranges.
    std::shared_ptr<std::mutex> lock;
  };
  Range* find(uint16_t port, size_t width);
  std::vector<Range> ranges_;
};

}  // namespace keel
