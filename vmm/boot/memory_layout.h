// Where things sit in the guest-physical address space.
#pragma once

#include <cstdint>
#include <vector>

#include "common/guest_memory.h"

namespace keel::layout {

// RAM below 4 GiB stops at the 32-bit PCI hole; the rest goes above 4 GiB.
inline constexpr uint64_t kPciHoleStart = 0xC000'0000;
inline constexpr uint64_t kHighMemStart = 0x1'0000'0000;

// Low memory used to hand the guest over (all in RAM below 1 MiB).
inline constexpr uint64_t kGdt = 0x500;
inline constexpr uint64_t kPvhStartInfo = 0x6000;  // hvm_start_info, then its memory map
inline constexpr uint64_t kZeroPage = 0x7000;      // Linux boot_params
inline constexpr uint64_t kBootStackTop = 0x8ff0;
inline constexpr uint64_t kPageTables = 0x9000;  // PML4, PDPT, 4 PDs: 0x9000..0xEFFF
inline constexpr uint64_t kCmdline = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;
inline constexpr uint64_t kEbdaStart = 0x9fc00;   // reserved up to 1 MiB from here
inline constexpr uint64_t kAcpiTables = 0xe0000;  // 128 KiB BIOS area, reserved
inline constexpr uint64_t kAcpiTablesSize = 0x20000;
inline constexpr uint64_t kKernelLoad = 0x100000;  // protected-mode kernel, as boot.rst asks

// KVM on Intel needs three pages for a real-mode TSS and one for an
// identity-map table somewhere the guest never uses.
inline constexpr uint64_t kKvmIdentityMap = 0xfeffc000;
inline constexpr uint64_t kKvmTss = 0xfeffd000;
inline constexpr uint64_t kKvmReservedEnd = 0xff000000;

inline constexpr uint64_t kIoapic = 0xfec00000;
inline constexpr uint64_t kLapic = 0xfee00000;

// ACPI PM registers (FADT PM1a_EVT_BLK, PM1a_CNT_BLK).
inline constexpr uint16_t kPm1aEvtPort = 0x600;
inline constexpr uint16_t kPm1aCntPort = 0x604;

// RAM regions for `size` bytes of guest memory: up to the PCI hole below
// 4 GiB, the rest from 4 GiB on.
std::vector<GuestRegion> guest_ram_regions(uint64_t size);

}  // namespace keel::layout
