// Device 00.0: the host bridge, as a guest's PCI scan expects to find it.
#pragma once

#include "devices/pci/pci_config_space.h"
#include "devices/pci/pci_device.h"

namespace keel {

class PciHostBridge : public PciDevice {
 public:
  PciHostBridge();
  uint32_t config_read(uint16_t offset) override { return config_.read_dword(offset); }
  void config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) override {
    config_.write_dword(offset, value, byte_mask);
  }

  // Snapshot of its configuration (see PciConfigSpace::restore). vCPUs stopped.
  state::v1::PciConfigState save() const { return config_.save(); }
  void restore(const state::v1::PciConfigState& state) {
    config_.restore(state, "pci host bridge");
  }

 private:
  PciConfigSpace config_;
};

}  // namespace keel
