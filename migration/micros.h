// A steady-clock duration as whole microseconds, the unit status and the
// stream's epoch frames report times in.
#pragma once

#include <chrono>
#include <cstdint>

namespace keel::migration {

inline uint64_t micros(std::chrono::steady_clock::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
}

}  // namespace keel::migration
