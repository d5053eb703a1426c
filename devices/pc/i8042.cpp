#include "devices/pc/i8042.h"

#include <algorithm>

#include "common/state_check.h"

namespace keel {

namespace {
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusLastCommand = 0x08;
constexpr uint8_t kStatusUnlocked = 0x10;

constexpr uint8_t kCmdReadConfig = 0x20;
constexpr uint8_t kCmdWriteConfig = 0x60;
constexpr uint8_t kCmdDisableAux = 0xa7;
constexpr uint8_t kCmdEnableAux = 0xa8;
constexpr uint8_t kCmdTestAux = 0xa9;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdTestKbd = 0xab;
constexpr uint8_t kCmdDisableKbd = 0xad;
constexpr uint8_t kCmdEnableKbd = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdPulseReset = 0xfe;
}  // namespace

void I8042::pio_read(uint16_t offset, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), 0);
  if (out.size() != 1) return;
  if (offset == 0) {
    out[0] = output_.value_or(0);
    output_.reset();
  } else if (offset == 4) {
    out[0] = static_cast<uint8_t>(kStatusSystemFlag | kStatusUnlocked |
                                  (output_ ? kStatusOutputFull : 0) |
                                  (last_was_command_ ? kStatusLastCommand : 0));
  }
}

void I8042::pio_write(uint16_t offset, std::span<const uint8_t> in) {
  if (in.size() != 1) return;
  if (offset == 0) {
    last_was_command_ = false;
    data(in[0]);
  } else if (offset == 4) {
    last_was_command_ = true;
    command(in[0]);
  }
}

void I8042::command(uint8_t cmd) {
  pending_cmd_.reset();
  switch (cmd) {
    case kCmdReadConfig:
      output_ = config_;
      break;
    case kCmdWriteConfig:
    case kCmdWriteOutputPort:
      pending_cmd_ = cmd;
      break;
    case kCmdDisableAux:
      config_ |= 0x20;
      break;
    case kCmdEnableAux:
      config_ &= ~0x20;
      break;
    case kCmdDisableKbd:
      config_ |= 0x10;
      break;
    case kCmdEnableKbd:
      config_ &= ~0x10;
      break;
    // No device on either port: the interface tests report a stuck clock.
    case kCmdTestAux:
    case kCmdTestKbd:
      output_ = 0x01;
      break;
    case kCmdSelfTest:
      output_ = 0x55;
      break;
    case kCmdReadOutputPort:
      output_ = 0x01;
      break;  // bit 0: CPU not held in reset
    case kCmdPulseReset:
      if (reset_) reset_();
      break;
    default:
      break;
  }
}

void I8042::data(uint8_t value) {
  if (!pending_cmd_) return;  // bytes for an absent keyboard are dropped
  uint8_t cmd = *pending_cmd_;
  pending_cmd_.reset();
  if (cmd == kCmdWriteConfig) {
    config_ = value;
  } else if (cmd == kCmdWriteOutputPort && !(value & 0x01)) {
    if (reset_) reset_();  // output port bit 0 low holds the CPU in reset
  }
}

state::v1::I8042State I8042::save() const {
  state::v1::I8042State s;
  s.set_has_output(output_.has_value());
  s.set_output(output_.value_or(0));
  s.set_has_pending_command(pending_cmd_.has_value());
  s.set_pending_command(pending_cmd_.value_or(0));
  s.set_config(config_);
  s.set_last_was_command(last_was_command_);
  return s;
}

void I8042::restore(const state::v1::I8042State& s) {
  const std::string name = "i8042";
  const auto output = state_field<uint8_t>(s.output(), name, "output");
  const auto pending = state_field<uint8_t>(s.pending_command(), name, "pending_command");
  const auto config = state_field<uint8_t>(s.config(), name, "config");
  if (!s.has_output() && output != 0) refuse_state(name, "output", "set without has_output");
  if (s.has_pending_command() ? (pending != kCmdWriteConfig && pending != kCmdWriteOutputPort)
                              : pending != 0) {
    refuse_state(name, "pending_command",
                 std::to_string(pending) + " is not a command waiting for data");
  }
  output_ = s.has_output() ? std::optional<uint8_t>(output) : std::nullopt;
  pending_cmd_ = s.has_pending_command() ? std::optional<uint8_t>(pending) : std::nullopt;
  config_ = config;
  last_was_command_ = s.last_was_command();
}

}  // namespace keel
