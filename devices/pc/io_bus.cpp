#include "devices/pc/io_bus.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace keel {

void IoBus::add(uint16_t base, uint16_t length, PioDevice& device, uint16_t device_offset) {
  uint32_t end = uint32_t{base} + length;
  if (length == 0 || end > 0x10000) throw std::invalid_argument("bad I/O port range");
  for (const auto& r : ranges_) {
    if (base < r.base + r.length && r.base < end) {
      throw std::invalid_argument("I/O ports " + std::to_string(base) + "+" +
                                  std::to_string(length) + " are already taken");
    }
  }
  std::shared_ptr<std::mutex> lock;
  for (const auto& r : ranges_) {
    if (r.device == &device) lock = r.lock;
  }
  if (!lock) lock = std::make_shared<std::mutex>();
  ranges_.push_back({base, length, device_offset, &device, std::move(lock)});
}

IoBus::Range* IoBus::find(uint16_t port, size_t width) {
  for (auto& r : ranges_) {
    if (port >= r.base && port + width <= r.base + r.length) return &r;
  }
  return nullptr;
}

bool IoBus::read(uint16_t port, std::span<uint8_t> data) {
  Range* r = find(port, data.size());
  if (r == nullptr) {
    std::fill(data.begin(), data.end(), 0xff);
    return false;
  }
  std::lock_guard guard(*r->lock);
  r->device->pio_read(static_cast<uint16_t>(port - r->base + r->device_offset), data);
  return true;
}

bool IoBus::write(uint16_t port, std::span<const uint8_t> data) {
  Range* r = find(port, data.size());
  if (r == nullptr) return false;
  std::lock_guard guard(*r->lock);
  r->device->pio_write(static_cast<uint16_t>(port - r->base + r->device_offset), data);
  return true;
}

void IoBus::with_device_locked(const PioDevice& device, const std::function<void()>& task) {
  for (const auto& r : ranges_) {
    if (r.device == &device) {
      std::lock_guard guard(*r.lock);
      task();
      return;
    }
  }
  throw std::invalid_argument("device is not on the I/O bus");
}

}  // namespace keel
