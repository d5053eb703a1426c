// Guest memory for the fuzz targets: two 64 KiB regions with a hole between
// them (so region edges and holes get exercised), created once and refilled
// from each input.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/guest_memory.h"

namespace keel::fuzz {

inline constexpr uint64_t kRegionSize = 0x10000;
inline constexpr uint64_t kSecondRegion = 0x20000;

inline GuestMemory& fuzz_memory() {
  static GuestMemory memory({{0, kRegionSize, 0}, {kSecondRegion, kRegionSize, kRegionSize}});
  return memory;
}

// Zeroes guest memory, then copies `data` into it from the first byte of RAM.
inline GuestMemory& fill_memory(const uint8_t* data, size_t size) {
  GuestMemory& memory = fuzz_memory();
  const auto all = memory.host_all_for_write();
  std::memset(all.data(), 0, all.size());
  std::memcpy(all.data(), data, std::min<size_t>(size, all.size()));
  return memory;
}

// Reads a little-endian T from the input, or zero past its end.
template <typename T>
T take(const uint8_t*& data, size_t& size) {
  T value{};
  const size_t n = std::min(sizeof(T), size);
  std::memcpy(&value, data, n);
  data += n;
  size -= n;
  return value;
}

// Invariant checks must fail loudly under the fuzzer.
#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      __builtin_printf("FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      __builtin_trap();                                                               \
    }                                                                                 \
  } while (0)

}  // namespace keel::fuzz
