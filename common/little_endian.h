// Values in guest-visible byte spans (register files, MMIO accesses), which
// are little-endian like the x86 guests and hosts Keel runs.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace keel {

// `data` is at most 8 bytes; shorter spans hold the low bytes.
inline uint64_t load_le(std::span<const uint8_t> data) {
  uint64_t value = 0;
  std::memcpy(&value, data.data(), data.size() < 8 ? data.size() : 8);
  return value;
}

inline void store_le(std::span<uint8_t> data, uint64_t value) {
  std::memcpy(data.data(), &value, data.size() < 8 ? data.size() : 8);
}

}  // namespace keel
