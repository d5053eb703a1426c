#include "devices/pci/pci_bus.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/state_check.h"

namespace keel {

namespace {
constexpr uint32_t kEnable = 1u << 31;
constexpr uint32_t kAddressBits = 0x80fffffc;  // the rest reads as zero
}  // namespace

void PciBus::add(unsigned slot, PciDevice& device) {
  if (slot >= kSlots || slots_[slot] != nullptr) {
    throw std::invalid_argument("PCI slot " + std::to_string(slot) + " is taken or out of range");
  }
  slots_[slot] = &device;
}

PciDevice* PciBus::data_window_target(uint16_t offset, size_t width, unsigned& byte,
                                      uint16_t& reg) const {
  // The data window is 0xCFC-0xCFF: an access must stay inside it.
  if (offset < 4 || offset - 4u + width > 4) return nullptr;
  byte = offset - 4u;
  return selected(reg);
}

PciDevice* PciBus::selected(uint16_t& reg) const {
  if (!(address_ & kEnable)) return nullptr;
  unsigned bus = (address_ >> 16) & 0xff;
  unsigned slot = (address_ >> 11) & 0x1f;
  unsigned function = (address_ >> 8) & 0x7;
  reg = static_cast<uint16_t>(address_ & 0xfc);
  if (bus != 0 || function != 0) return nullptr;
  return slots_[slot];
}

void PciBus::pio_read(uint16_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (offset < 4) {
    // Only dword accesses reach the address register (byte accesses to
    // 0xCF8-0xCFB belong to other mechanisms on real chipsets).
    if (offset == 0 && data.size() == 4) {
      for (size_t i = 0; i < 4; ++i) data[i] = static_cast<uint8_t>(address_ >> (8 * i));
    }
    return;
  }
  unsigned byte = 0;
  uint16_t reg = 0;
  PciDevice* device = data_window_target(offset, data.size(), byte, reg);
  if (device == nullptr) return;
  uint32_t value = device->config_read(reg);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(value >> (8 * (byte + i)));
}

void PciBus::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  if (offset < 4) {
    if (offset == 0 && data.size() == 4) {
      address_ = uint32_t{data[0]} | uint32_t{data[1]} << 8 | uint32_t{data[2]} << 16 |
                 uint32_t{data[3]} << 24;
      address_ &= kAddressBits;  // reserved bits and the low two bits read as zero
    }
    return;
  }
  unsigned byte = 0;
  uint16_t reg = 0;
  PciDevice* device = data_window_target(offset, data.size(), byte, reg);
  if (device == nullptr) return;
  uint32_t value = 0;
  uint8_t mask = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    value |= uint32_t{data[i]} << (8 * (byte + i));
    mask |= static_cast<uint8_t>(1u << (byte + i));
  }
  device->config_write(reg, value, mask);
}

state::v1::PciBusState PciBus::save() const {
  state::v1::PciBusState s;
  s.set_address(address_);
  return s;
}

void PciBus::restore(const state::v1::PciBusState& s) {
  if (s.address() & ~kAddressBits) refuse_state("pci-bus", "address", "has reserved bits set");
  address_ = s.address();
}

}  // namespace keel
