// The PC keyboard controller, enough of it for a guest to find it and to
// reset the machine through it (command 0xFE, or output port bit 0).
// No keyboard or mouse is attached.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "devices/pc/pio_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class I8042 : public PioDevice {
 public:
  using ResetRequest = std::function<void()>;
  explicit I8042(ResetRequest reset) : reset_(std::move(reset)) {}

  // Registered twice: at 0x60 (data, offset 0) and 0x64 (command/status, offset 4).
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Snapshot (proto/device_state.proto); restore() refuses what the
  // controller could not hold (InputError naming the field). vCPUs stopped.
  state::v1::I8042State save() const;
  void restore(const state::v1::I8042State& state);

 private:
  void command(uint8_t cmd);
  void data(uint8_t value);

  ResetRequest reset_;
  std::optional<uint8_t> output_;       // the byte the guest reads next from 0x60
  std::optional<uint8_t> pending_cmd_;  // a command waiting for its data byte
  uint8_t config_ = 0x30;               // both ports' clocks disabled, no interrupts
  bool last_was_command_ = false;
};

}  // namespace keel
