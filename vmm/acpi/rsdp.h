// Root System Description Pointer (ACPI 6.3 §5.2.5.3): the structure the guest
// finds first (by scanning 0xE0000-0xFFFFF on 16-byte boundaries, or through the
// boot protocol), pointing at the XSDT and RSDT.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel::acpi {

inline constexpr std::size_t kRsdpSize = 36;  // revision 2 (ACPI 2.0+) layout

// 36 bytes, revision 2, with both checksums set.
std::vector<uint8_t> make_rsdp(uint32_t rsdt_gpa, uint64_t xsdt_gpa);

}  // namespace keel::acpi
