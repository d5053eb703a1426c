// Fixed ACPI Description Table (ACPI 6.3 §5.2.9, signature "FACP"): the
// fixed-feature hardware (PM1 event and control blocks, SCI, reset register)
// and the addresses of the DSDT and FACS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "vmm/acpi/acpi_tables.h"

namespace keel::acpi {

inline constexpr std::size_t kFadtSize = 276;  // revision 6 layout
inline constexpr uint8_t kFadtRevision = 6;
inline constexpr uint8_t kFadtMinorRevision = 3;  // ACPI 6.3

// FADT Fixed Feature Flags (ACPI 6.3 §5.2.9, Table 5-34).
inline constexpr uint32_t kFadtWbinvd = 1u << 0;
inline constexpr uint32_t kFadtProcC1 = 1u << 2;
inline constexpr uint32_t kFadtPowerButtonIsControlMethod = 1u << 4;  // PWR_BUTTON
inline constexpr uint32_t kFadtSleepButtonIsControlMethod = 1u << 5;  // SLP_BUTTON
inline constexpr uint32_t kFadtFixRtc = 1u << 6;
inline constexpr uint32_t kFadtResetRegSupported = 1u << 10;
inline constexpr uint32_t kFadtHardwareReduced = 1u << 20;

// IA-PC Boot Architecture Flags (ACPI 6.3 §5.2.9.3, Table 5-35).
inline constexpr uint16_t kBootArchLegacyDevices = 1u << 0;
inline constexpr uint16_t kBootArch8042 = 1u << 1;
inline constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;
inline constexpr uint16_t kBootArchMsiNotSupported = 1u << 3;
inline constexpr uint16_t kBootArchCmosRtcNotPresent = 1u << 5;

// The choices, and why:
// - Not hardware-reduced: the guest uses the PM1 fixed registers for soft-off
//   (SLP_TYP/SLP_EN) and the fixed-feature power button, both plain port I/O.
// - SMI_CMD = 0: ACPI is always enabled, the guest never hands over from SMM;
//   PM1_CNT.SCI_EN must therefore read as 1.
// - PWR_BUTTON clear: a fixed-feature power button. The VMM presses it by
//   setting PWRBTN_STS in PM1_STS and raising the SCI (if PWRBTN_EN is set).
// - SLP_BUTTON set: no sleep button at all (no fixed one and no PNP0C0E device).
// - FIX_RTC set: no RTC wake status in the PM1 registers.
// - No PM timer (PM_TMR_BLK 0, optional since ACPI 5.0), no GPE blocks.
// - RESET_REG: the i8042 reset command, RESET_REG_SUP set.
// - IAPC_BOOT_ARCH: legacy devices and an 8042 present, no VGA, MSI supported,
//   CMOS RTC present (the VMM emulates one).
std::vector<uint8_t> make_fadt(const AcpiPlatform& platform, uint32_t dsdt_gpa, uint32_t facs_gpa);

}  // namespace keel::acpi
