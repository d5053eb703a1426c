// Checks for device state being restored (proto/device_state.proto): a
// snapshot is untrusted input, like guest writes. Refusals are InputErrors
// naming the device and the field.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "common/error.h"

namespace keel {

[[noreturn]] inline void refuse_state(const std::string& device, const std::string& field,
                                      const std::string& why) {
  throw InputError("device state of " + device + ": " + field + " " + why);
}

// `value` as the register type T, refused when it does not fit.
template <typename T>
T state_field(uint64_t value, const std::string& device, const std::string& field) {
  if (value > std::numeric_limits<T>::max()) {
    refuse_state(
        device, field,
        std::to_string(value) + " does not fit " + std::to_string(8 * sizeof(T)) + " bits");
  }
  return static_cast<T>(value);
}

}  // namespace keel
