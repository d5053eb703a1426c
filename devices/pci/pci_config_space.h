// A type-0 PCI configuration header (PCI Local Bus 3.0, 6.1) with per-bit
// write masks, so that read-only fields stay read-only whatever a guest writes.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "proto/device_state.pb.h"

namespace keel {

class PciConfigSpace {
 public:
  PciConfigSpace(uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision);

  uint32_t read_dword(uint16_t offset) const;
  void write_dword(uint16_t offset, uint32_t value, uint8_t byte_mask);

  // For device code: set bytes and which of their bits the guest may change.
  void set_u8(uint16_t offset, uint8_t value, uint8_t writable = 0);
  void set_u16(uint16_t offset, uint16_t value, uint16_t writable = 0);
  void set_u32(uint16_t offset, uint32_t value, uint32_t writable = 0);

  // Snapshot: the 256 bytes. restore() takes only the writable bits and
  // requires every read-only bit to equal this space's own (it was built by
  // the same device code); otherwise it throws InputError naming `device`
  // and the offset, and changes nothing. check() is the same test alone.
  state::v1::PciConfigState save() const;
  void check(const state::v1::PciConfigState& state, const std::string& device) const;
  void restore(const state::v1::PciConfigState& state, const std::string& device);

  static constexpr uint16_t kSize = 256;
  static constexpr uint16_t kCommand = 0x04;

 private:
  std::array<uint8_t, kSize> bytes_{};
  std::array<uint8_t, kSize> writable_{};
};

}  // namespace keel
