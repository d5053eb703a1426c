// Multiple APIC Description Table (ACPI 6.3 §5.2.12, signature "APIC"): the
// vCPUs' local APICs, the I/O APIC and how ISA IRQs map onto its inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "vmm/acpi/acpi_tables.h"

namespace keel::acpi {

inline constexpr uint8_t kMadtRevision = 5;  // ACPI 6.3

// Interrupt Controller Structure types (ACPI 6.3 Table 5-45).
inline constexpr uint8_t kMadtLocalApic = 0;
inline constexpr uint8_t kMadtIoApic = 1;
inline constexpr uint8_t kMadtInterruptSourceOverride = 2;
inline constexpr uint8_t kMadtLocalApicNmi = 4;

// MPS INTI flags (ACPI 6.3 Table 5-50): polarity in bits 0-1, trigger mode in bits 2-3.
inline constexpr uint16_t kIntiConforming = 0x0;
inline constexpr uint16_t kIntiActiveHigh = 0x1;
inline constexpr uint16_t kIntiEdge = 0x1 << 2;
inline constexpr uint16_t kIntiLevel = 0x3 << 2;

inline constexpr uint32_t kMadtPcAtCompat = 1u << 0;  // dual 8259s present (masked by the guest)

std::size_t madt_size(uint32_t cpu_count);

// Contents: local APIC address with PCAT_COMPAT; one enabled Processor Local
// APIC per vCPU (UID = APIC ID = index); one I/O APIC with GSI base 0; the
// overrides ISA IRQ 0 -> GSI 2 (bus-conforming, the PIT on pin 2 as on every
// PC) and SCI IRQ -> same GSI, level active-high; LINT1 of every local APIC is
// the NMI input. Other ISA IRQs map 1:1 to GSIs, edge active-high, by default.
std::vector<uint8_t> make_madt(const AcpiPlatform& platform);

}  // namespace keel::acpi
