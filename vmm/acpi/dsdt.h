// Differentiated System Description Table (ACPI 6.3 §5.2.11.1): the AML in
// dsdt.asl (\_S5, the PCI host bridge \_SB.PCI0, the serial port \_SB.COM1),
// with the host bridge windows filled in.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "vmm/acpi/acpi_tables.h"

namespace keel::acpi {

// Named integers in \_SB.PCI0 that carry the windows; dsdt.asl must define each
// exactly once as a QWord constant equal to its placeholder.
struct DsdtPatchSlot {
  std::string_view name;  // 4-character AML NameSeg
  uint64_t placeholder;
};
inline constexpr DsdtPatchSlot kIoWindowBase{"IOWB", 0x4B45454C50000001};
inline constexpr DsdtPatchSlot kIoWindowLength{"IOWL", 0x4B45454C50000002};
inline constexpr DsdtPatchSlot kMmio32WindowBase{"M32B", 0x4B45454C50000003};
inline constexpr DsdtPatchSlot kMmio32WindowLength{"M32L", 0x4B45454C50000004};
inline constexpr DsdtPatchSlot kMmio64WindowBase{"M64B", 0x4B45454C50000005};
inline constexpr DsdtPatchSlot kMmio64WindowLength{"M64L", 0x4B45454C50000006};

// Copy of the compiled DSDT with the windows written into the named integers
// and the checksum redone. Throws std::invalid_argument if a window cannot be
// described (I/O window below 0x0D00 or past 0xFFFF, 32-bit window past 4 GiB,
// 64-bit window below 4 GiB or wrapping), std::logic_error if the compiled AML
// lacks a placeholder.
std::vector<uint8_t> make_dsdt(const PciHostWindow& pci);

}  // namespace keel::acpi
