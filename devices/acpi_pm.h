// The ACPI fixed-hardware PM1 registers (ACPI 6.4, 4.8.3): PM1a event block
// (status, enable) and PM1a control block, where the guest asks for sleep
// states. Writing SLP_EN with the SLP_TYP of \_S5 is a poweroff.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/pio_device.h"

namespace keel {

class AcpiPm : public PioDevice {
 public:
  using PowerOff = std::function<void()>;
  // `s5_sleep_type`: the SLP_TYP value of \_S5 in the DSDT.
  AcpiPm(uint8_t s5_sleep_type, PowerOff power_off)
      : s5_sleep_type_(s5_sleep_type), power_off_(std::move(power_off)) {}

  // Registered over 8 ports: event block at offset 0 (4 bytes), control at 4 (2 bytes).
  static constexpr uint16_t kPortCount = 8;

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

 private:
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = 1;  // SCI_EN: ACPI mode from the start (FADT SMI_CMD is 0)
  uint8_t s5_sleep_type_;
  PowerOff power_off_;
};

}  // namespace keel
