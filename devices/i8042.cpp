#include "devices/i8042.h"

#include <algorithm>

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
    case kCmdReadConfig: output_ = config_; break;
    case kCmdWriteConfig:
    case kCmdWriteOutputPort: pending_cmd_ = cmd; break;
    case kCmdDisableAux: config_ |= 0x20; break;
    case kCmdEnableAux: config_ &= ~0x20; break;
    case kCmdDisableKbd: config_ |= 0x10; break;
    case kCmdEnableKbd: config_ &= ~0x10; break;
    // No device on either port: the interface tests report a stuck clock.
    case kCmdTestAux:
    case kCmdTestKbd: output_ = 0x01; break;
    case kCmdSelfTest: output_ = 0x55; break;
    case kCmdReadOutputPort: output_ = 0x01; break;  // bit 0: CPU not held in reset
    case kCmdPulseReset:
      if (reset_) reset_();
      break;
    default: break;
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

}  // namespace keel
