// The ACPI fixed-hardware PM1 registers (ACPI 6.4, 4.8.3): PM1a event block
// (status, enable) and PM1a control block, where the guest asks for sleep
// states. Writing SLP_EN with the SLP_TYP of \_S5 is a poweroff. The fixed
// power button (4.8.3.1.1, 4.8.2.2.1): a press sets PWRBTN_STS, and the SCI
// is a level, asserted while an enabled status bit is set (4.8.3.1).
//
// Thread-safe: port accesses come from vCPUs, button presses from the
// event loop.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/pc/pio_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class AcpiPm : public PioDevice {
 public:
  using PowerOff = std::function<void()>;
  using Sci = std::function<void(bool asserted)>;
  // `s5_sleep_type`: the SLP_TYP value of \_S5 in the DSDT. `sci` hears
  // the SCI level's changes (none: no SCI wired).
  AcpiPm(uint8_t s5_sleep_type, PowerOff power_off, Sci sci = nullptr)
      : s5_sleep_type_(s5_sleep_type), power_off_(std::move(power_off)), sci_(std::move(sci)) {}

  static constexpr uint16_t kPowerButtonStatus = 1 << 8;  // PWRBTN_STS / PWRBTN_EN

  // The operator pressed the power button: the guest's OS decides what to do
  // (a stock Linux with a handler powers off).
  void press_power_button();

  // Registered over 8 ports: event block at offset 0 (4 bytes), control at 4 (2 bytes).
  static constexpr uint16_t kPortCount = 8;

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Snapshot (proto/device_state.proto); take the device's lock. restore()
  // refuses register values the guest could not have produced (InputError
  // naming the field) and re-raises the SCI through `sci` when the restored
  // registers assert it.
  state::v1::AcpiPmState save();
  void restore(const state::v1::AcpiPmState& state);

 private:
  void update_sci();

  std::mutex mutex_;
  bool sci_level_ = false;
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = 1;  // SCI_EN: ACPI mode from the start (FADT SMI_CMD is 0)
  uint8_t s5_sleep_type_;
  PowerOff power_off_;
  Sci sci_;
};

}  // namespace keel
