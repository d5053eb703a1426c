// PCI bus 0 and its configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2):
// the address register at 0xCF8 and the data window at 0xCFC-0xCFF.
// Functions that are not there read as all ones.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "devices/pc/pio_device.h"
#include "devices/pci/pci_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class PciBus : public PioDevice {
 public:
  static constexpr uint16_t kConfigPort = 0xcf8;
  static constexpr uint16_t kConfigPortCount = 8;
  static constexpr unsigned kSlots = 32;

  // Function 0 of `slot`; throws std::invalid_argument if taken or out of range.
  void add(unsigned slot, PciDevice& device);

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Snapshot of the address register (the functions save their own
  // configuration). restore() refuses reserved bits (InputError). vCPUs stopped.
  state::v1::PciBusState save() const;
  void restore(const state::v1::PciBusState& state);

 private:
  PciDevice* selected(uint16_t& reg) const;
  PciDevice* data_window_target(uint16_t offset, size_t width, unsigned& byte, uint16_t& reg) const;

  std::array<PciDevice*, kSlots> slots_{};
  uint32_t address_ = 0;
};

}  // namespace keel
