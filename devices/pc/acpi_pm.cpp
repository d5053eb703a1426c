#include "devices/pc/acpi_pm.h"

#include <algorithm>
#include <cstring>

#include "common/state_check.h"

namespace keel {

namespace {
constexpr uint16_t kStatus = 0, kEnable = 2, kControl = 4;
constexpr uint16_t kSciEnable = 1 << 0;
constexpr uint16_t kSleepEnable = 1 << 13;
constexpr unsigned kSleepTypeShift = 10;
constexpr uint16_t kSleepTypeMask = 0x7;

// Reads or writes within the 8-byte register file; partial and unaligned
// accesses touch the bytes they cover, as on real chipsets.
}  // namespace

void AcpiPm::pio_read(uint16_t offset, std::span<uint8_t> data) {
  std::lock_guard guard(mutex_);
  uint8_t regs[8] = {};
  std::memcpy(regs + kStatus, &status_, 2);
  std::memcpy(regs + kEnable, &enable_, 2);
  std::memcpy(regs + kControl, &control_, 2);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof regs ? regs[offset + i] : 0;
  }
}

void AcpiPm::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  std::unique_lock guard(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    size_t at = offset + i;
    uint8_t byte = data[i];
    if (at < kEnable) {
      // PM1_STS bits are cleared by writing ones.
      status_ &= static_cast<uint16_t>(~(uint16_t{byte} << (8 * at)));
    } else if (at < kControl) {
      unsigned shift = 8 * static_cast<unsigned>(at - kEnable);
      enable_ = static_cast<uint16_t>((enable_ & ~(0xff << shift)) | (byte << shift));
    } else if (at < kControl + 2) {
      unsigned shift = 8 * static_cast<unsigned>(at - kControl);
      control_ = static_cast<uint16_t>((control_ & ~(0xff << shift)) | (byte << shift));
    }
  }
  control_ |= kSciEnable;
  update_sci();
  if (control_ & kSleepEnable) {
    // SLP_EN is write-only: it reads back as zero.
    control_ &= static_cast<uint16_t>(~kSleepEnable);
    uint16_t type = (control_ >> kSleepTypeShift) & kSleepTypeMask;
    guard.unlock();
    if (type == s5_sleep_type_ && power_off_) power_off_();
  }
}

void AcpiPm::press_power_button() {
  std::lock_guard guard(mutex_);
  status_ |= kPowerButtonStatus;
  update_sci();
}

// Only the power button raises the SCI here; the other status bits (timer,
// global lock, RTC) have no source in this machine.
void AcpiPm::update_sci() {
  const bool level = (status_ & enable_ & kPowerButtonStatus) != 0 && (control_ & kSciEnable);
  if (level == sci_level_) return;
  sci_level_ = level;
  if (sci_) sci_(level);
}

state::v1::AcpiPmState AcpiPm::save() {
  std::lock_guard guard(mutex_);
  state::v1::AcpiPmState s;
  s.set_status(status_);
  s.set_enable(enable_);
  s.set_control(control_);
  s.set_sci_level(sci_level_);
  return s;
}

void AcpiPm::restore(const state::v1::AcpiPmState& s) {
  const std::string name = "acpi-pm";
  const auto status = state_field<uint16_t>(s.status(), name, "status");
  const auto enable = state_field<uint16_t>(s.enable(), name, "enable");
  const auto control = state_field<uint16_t>(s.control(), name, "control");
  // Only the power button sets a status bit here (guests clear them).
  if (status & ~kPowerButtonStatus) refuse_state(name, "status", "has bits no source here sets");
  if (!(control & kSciEnable)) refuse_state(name, "control", "lacks SCI_EN, which is always set");
  if (control & kSleepEnable) refuse_state(name, "control", "has SLP_EN, which reads as zero");
  const bool level = (status & enable & kPowerButtonStatus) != 0;
  if (level != s.sci_level()) refuse_state(name, "sci_level", "disagrees with status and enable");
  std::lock_guard guard(mutex_);
  status_ = status;
  enable_ = enable;
  control_ = control;
  update_sci();
}

}  // namespace keel
