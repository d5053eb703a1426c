// The lists of the other description tables: XSDT (64-bit entries, ACPI 6.3
// §5.2.8), which ACPI 2.0+ guests use, and RSDT (32-bit entries, §5.2.7) for
// older parsers. Both list the same tables; the DSDT and FACS are reached
// through the FADT, not through these lists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace keel::acpi {

inline constexpr std::size_t xsdt_size(std::size_t entries) {
  return 36 + 8 * entries;
}
inline constexpr std::size_t rsdt_size(std::size_t entries) {
  return 36 + 4 * entries;
}

std::vector<uint8_t> make_xsdt(std::span<const uint64_t> table_gpas);
// Throws std::invalid_argument if a table lies at or above 4 GiB.
std::vector<uint8_t> make_rsdt(std::span<const uint64_t> table_gpas);

}  // namespace keel::acpi
