#include "devices/pci/pci_config_space.h"

#include "common/hex.h"
#include "common/state_check.h"

namespace keel {

namespace {
constexpr uint16_t kVendorId = 0x00, kDeviceId = 0x02, kRevision = 0x08, kClass = 0x09;
// Command register bits a guest may set: I/O, memory, bus master, INTx disable.
constexpr uint16_t kCommandWritable = 0x0001 | 0x0002 | 0x0004 | 0x0400;
}  // namespace

PciConfigSpace::PciConfigSpace(uint16_t vendor, uint16_t device, uint32_t class_code,
                               uint8_t revision) {
  set_u16(kVendorId, vendor);
  set_u16(kDeviceId, device);
  set_u8(kRevision, revision);
  set_u8(kClass, static_cast<uint8_t>(class_code));
  set_u16(kClass + 1, static_cast<uint16_t>(class_code >> 8));
  set_u16(kCommand, 0, kCommandWritable);
}

uint32_t PciConfigSpace::read_dword(uint16_t offset) const {
  offset &= kSize - 4;
  return uint32_t{bytes_[offset]} | uint32_t{bytes_[offset + 1]} << 8 |
         uint32_t{bytes_[offset + 2]} << 16 | uint32_t{bytes_[offset + 3]} << 24;
}

void PciConfigSpace::write_dword(uint16_t offset, uint32_t value, uint8_t byte_mask) {
  offset &= kSize - 4;
  for (unsigned i = 0; i < 4; ++i) {
    if (!(byte_mask & (1u << i))) continue;
    uint8_t v = static_cast<uint8_t>(value >> (8 * i));
    uint8_t w = writable_[offset + i];
    bytes_[offset + i] = static_cast<uint8_t>((bytes_[offset + i] & ~w) | (v & w));
  }
}

void PciConfigSpace::set_u8(uint16_t offset, uint8_t value, uint8_t writable) {
  bytes_[offset % kSize] = value;
  writable_[offset % kSize] = writable;
}

void PciConfigSpace::set_u16(uint16_t offset, uint16_t value, uint16_t writable) {
  set_u8(offset, static_cast<uint8_t>(value), static_cast<uint8_t>(writable));
  set_u8(offset + 1, static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(writable >> 8));
}

void PciConfigSpace::set_u32(uint16_t offset, uint32_t value, uint32_t writable) {
  set_u16(offset, static_cast<uint16_t>(value), static_cast<uint16_t>(writable));
  set_u16(offset + 2, static_cast<uint16_t>(value >> 16), static_cast<uint16_t>(writable >> 16));
}

state::v1::PciConfigState PciConfigSpace::save() const {
  state::v1::PciConfigState s;
  s.set_bytes(std::string(bytes_.begin(), bytes_.end()));
  return s;
}

void PciConfigSpace::check(const state::v1::PciConfigState& s, const std::string& device) const {
  if (s.bytes().size() != kSize) {
    refuse_state(device, "PCI configuration",
                 "has " + std::to_string(s.bytes().size()) + " bytes, not 256");
  }
  for (unsigned i = 0; i < kSize; ++i) {
    const auto saved = static_cast<uint8_t>(s.bytes()[i]);
    if ((saved ^ bytes_[i]) & ~writable_[i]) {
      refuse_state(device, "PCI configuration", "byte " + hex(i) + " differs in read-only bits");
    }
  }
}

void PciConfigSpace::restore(const state::v1::PciConfigState& s, const std::string& device) {
  check(s, device);
  for (unsigned i = 0; i < kSize; ++i) {
    const auto saved = static_cast<uint8_t>(s.bytes()[i]);
    bytes_[i] = static_cast<uint8_t>((bytes_[i] & ~writable_[i]) | (saved & writable_[i]));
  }
}

}  // namespace keel
