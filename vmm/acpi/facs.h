// Firmware ACPI Control Structure (ACPI 6.3 §5.2.10). Required by the FADT of a
// platform that is not hardware-reduced; holds the global lock and the waking
// vector. Keel supports neither S3 nor firmware that shares the global lock, so
// the structure stays all zero apart from its identification.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel::acpi {

inline constexpr std::size_t kFacsSize = 64;
inline constexpr std::size_t kFacsAlignment = 64;  // must sit on a 64-byte boundary

std::vector<uint8_t> make_facs();

}  // namespace keel::acpi
