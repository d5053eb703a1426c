#include "devices/virtio/pci/msix_table.h"

#include <cstring>
#include <stdexcept>

#include "common/little_endian.h"
#include "common/state_check.h"

namespace keel::virtio {

namespace {
constexpr uint32_t kVectorControlMask = 1;             // 6.8.2.9: bit 0, the rest reserved
constexpr uint32_t kAddressLoWritable = ~uint32_t{3};  // 6.8.2.6: dword-aligned

// Only aligned dword and qword accesses are valid (6.8.2).
bool valid_access(uint64_t offset, size_t size) {
  return (size == 4 || size == 8) && offset % size == 0;
}

}  // namespace

MsixTable::MsixTable(uint16_t vectors, MsiSink& sink) : sink_(sink) {
  if (vectors == 0 || vectors > kMaxVectors) {
    throw std::invalid_argument("MSI-X table needs 1 to 2048 vectors");
  }
  entries_.resize(vectors);
  pba_.resize((vectors + 63u) / 64u);
}

uint32_t MsixTable::read_dword(uint64_t offset) const {
  const Entry& e = entries_[offset / kEntryBytes];
  switch (offset % kEntryBytes) {
    case 0:
      return e.address_lo;
    case 4:
      return e.address_hi;
    case 8:
      return e.data;
    default:
      return e.control;
  }
}

void MsixTable::write_dword(uint64_t offset, uint32_t value) {
  const uint16_t vector = static_cast<uint16_t>(offset / kEntryBytes);
  Entry& e = entries_[vector];
  switch (offset % kEntryBytes) {
    case 0:
      e.address_lo = value & kAddressLoWritable;
      break;
    case 4:
      e.address_hi = value;
      break;
    case 8:
      e.data = value;
      break;
    default:
      e.control = value & kVectorControlMask;
      if (enabled_ && pending(vector) && !masked(vector)) send(vector);
      break;
  }
}

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) const {
  std::memset(data.data(), 0, data.size());
  if (!valid_access(offset, data.size()) || offset >= table_bytes()) return;
  uint64_t value = read_dword(offset);
  if (data.size() == 8) value |= uint64_t{read_dword(offset + 4)} << 32;
  store_le(data, value);
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
  if (!valid_access(offset, data.size()) || offset >= table_bytes()) return;
  const uint64_t value = load_le(data);
  write_dword(offset, static_cast<uint32_t>(value));
  if (data.size() == 8) write_dword(offset + 4, static_cast<uint32_t>(value >> 32));
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) const {
  std::memset(data.data(), 0, data.size());
  if (!valid_access(offset, data.size()) || offset >= pba_bytes()) return;
  uint64_t value = pba_[offset / 8];
  if (data.size() == 4) value >>= 8 * (offset % 8);
  store_le(data, value);
}

void MsixTable::set_control(bool enabled, bool function_masked) {
  enabled_ = enabled;
  function_masked_ = function_masked;
  deliver_pending();
}

void MsixTable::deliver_pending() {
  if (!enabled_ || function_masked_) return;
  for (uint16_t v = 0; v < vectors(); ++v) {
    if (pending(v) && !masked(v)) send(v);
  }
}

bool MsixTable::masked(uint16_t vector) const {
  if (vector >= vectors()) return false;
  return function_masked_ || (entries_[vector].control & kVectorControlMask);
}

bool MsixTable::pending(uint16_t vector) const {
  if (vector >= vectors()) return false;
  return (pba_[vector / 64] >> (vector % 64)) & 1;
}

void MsixTable::trigger(uint16_t vector) {
  if (!enabled_ || vector >= vectors()) return;
  if (masked(vector)) {
    pba_[vector / 64] |= uint64_t{1} << (vector % 64);
    return;
  }
  send(vector);
}

void MsixTable::send(uint16_t vector) {
  pba_[vector / 64] &= ~(uint64_t{1} << (vector % 64));
  const Entry& e = entries_[vector];
  sink_.send(vector, uint64_t{e.address_hi} << 32 | e.address_lo, e.data);
}

void MsixTable::reset() {
  for (Entry& e : entries_) e = Entry{};
  for (uint64_t& p : pba_) p = 0;
  enabled_ = false;
  function_masked_ = false;
}

state::v1::MsixState MsixTable::save() const {
  state::v1::MsixState s;
  for (const Entry& e : entries_) {
    state::v1::MsixEntry* out = s.add_entries();
    out->set_address_lo(e.address_lo);
    out->set_address_hi(e.address_hi);
    out->set_data(e.data);
    out->set_control(e.control);
  }
  for (uint64_t p : pba_) s.add_pba(p);
  s.set_enabled(enabled_);
  s.set_function_masked(function_masked_);
  return s;
}

void MsixTable::check(const state::v1::MsixState& s, const std::string& device) const {
  if (static_cast<size_t>(s.entries_size()) != entries_.size()) {
    refuse_state(device, "MSI-X table",
                 "has " + std::to_string(s.entries_size()) + " entries, not " +
                     std::to_string(entries_.size()));
  }
  if (static_cast<size_t>(s.pba_size()) != pba_.size()) {
    refuse_state(
        device, "MSI-X PBA",
        "has " + std::to_string(s.pba_size()) + " qwords, not " + std::to_string(pba_.size()));
  }
  for (int v = 0; v < s.entries_size(); ++v) {
    const state::v1::MsixEntry& e = s.entries(v);
    const std::string field = "MSI-X entry " + std::to_string(v);
    if (e.address_lo() & ~kAddressLoWritable)
      refuse_state(device, field, "address is not dword-aligned");
    if (e.control() & ~kVectorControlMask)
      refuse_state(device, field, "vector control has reserved bits");
    const bool pending = (s.pba(v / 64) >> (v % 64)) & 1;
    const bool masked = s.function_masked() || (e.control() & kVectorControlMask);
    if (pending && s.enabled() && !masked) {
      refuse_state(device, field, "is pending while enabled and unmasked");
    }
  }
  const unsigned tail = vectors() % 64;
  if (tail != 0 && (s.pba(s.pba_size() - 1) >> tail) != 0) {
    refuse_state(device, "MSI-X PBA", "has pending bits past the last vector");
  }
}

void MsixTable::restore(const state::v1::MsixState& s, const std::string& device) {
  check(s, device);
  for (size_t v = 0; v < entries_.size(); ++v) {
    const state::v1::MsixEntry& e = s.entries(static_cast<int>(v));
    entries_[v] = Entry{e.address_lo(), e.address_hi(), e.data(), e.control()};
  }
  for (size_t i = 0; i < pba_.size(); ++i) pba_[i] = s.pba(static_cast<int>(i));
  enabled_ = s.enabled();
  function_masked_ = s.function_masked();
}

}  // namespace keel::virtio
