// Routes guest port I/O to the device registered for the port range.
// Ports nobody claims read as all ones and ignore writes, like an ISA bus
// with nothing on it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "devices/pio_device.h"

namespace keel {

class IoBus {
 public:
  // Throws std::invalid_argument when the range overlaps one already taken.
  void add(uint16_t base, uint16_t length, PioDevice& device);
  // Both return false when no device claims `port`.
  bool read(uint16_t port, std::span<uint8_t> data);
  bool write(uint16_t port, std::span<const uint8_t> data);

 private:
  struct Range {
    uint32_t base;
    uint32_t length;
    PioDevice* device;
    // vCPU threads may reach one device at once; each device is serialised.
    std::unique_ptr<std::mutex> lock;
  };
  Range* find(uint16_t port, size_t width);
  std::vector<Range> ranges_;
};

}  // namespace keel
