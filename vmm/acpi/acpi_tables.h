// ACPI tables that the VMM places in guest memory so that the guest OS finds its
// CPUs, interrupt controllers, PCI host bridge, power button and soft-off
// (Debian's cloud kernel has no MP-table parser; poweroff must reach the VMM).
// Table layouts follow ACPI 6.3 chapter 5.
#pragma once

#include <cstdint>
#include <vector>

namespace keel::acpi {

// Address ranges the PCI host bridge forwards to PCI devices; the DSDT's
// \_SB.PCI0._CRS reports them so the guest allocates BARs inside them.
// A size of 0 means the window does not exist.
struct PciHostWindow {
  // 32-bit MMIO hole: below 4 GiB, clear of the I/O APIC and local APIC pages.
  uint64_t mmio32_base = 0xC0000000;
  uint64_t mmio32_size = 0x3C000000;  // up to 0xFBFFFFFF
  // 64-bit MMIO window, above guest RAM; the VMM picks it from the RAM size.
  uint64_t mmio64_base = 0;
  uint64_t mmio64_size = 0;
  // I/O port window. Ports 0x0000-0x0CF7 (legacy devices) and the configuration
  // ports 0x0CF8-0x0CFF are always reported, so the window must start at 0x0D00
  // or above and end at or below 0xFFFF.
  uint16_t io_base = 0x0D00;
  uint16_t io_size = 0xF300;  // up to 0xFFFF
};

struct AcpiPlatform {
  // 1..255: one enabled Processor Local APIC per vCPU with APIC ID = ACPI
  // processor UID = vCPU index (0..254; 255 is the xAPIC broadcast ID).
  uint32_t cpu_count = 1;
  uint32_t lapic_address = 0xFEE00000;
  uint32_t ioapic_address = 0xFEC00000;
  // 0, the value KVM's in-kernel I/O APIC ID register holds after reset. I/O APIC
  // IDs do not share a namespace with local APIC IDs on xAPIC systems, so this
  // does not collide with vCPU 0 (QEMU does the same).
  uint8_t ioapic_id = 0;
  // ISA IRQ of the SCI, 1..15 but not 2 (IRQ 0 is routed to GSI 2). The MADT
  // routes it to the same GSI, level-triggered active-high, so the VMM raises the
  // SCI by asserting that GSI level-high.
  uint16_t sci_irq = 9;
  uint16_t pm1a_evt_port = 0x600;  // PM1a_EVT_BLK, 4 bytes: PM1_STS (16 bit), PM1_EN (16 bit)
  uint16_t pm1a_cnt_port = 0x604;  // PM1a_CNT_BLK, 2 bytes: PM1_CNT (16 bit)
  // FADT RESET_REG (system I/O, 8 bit) and RESET_VALUE: the i8042 "pulse reset
  // line" command, which the VMM's i8042 emulation turns into a reset.
  uint16_t reset_port = 0x64;
  uint8_t reset_value = 0xFE;
  // FADT CENTURY: the CMOS RAM index where the RTC keeps the century (0: none).
  uint8_t rtc_century_index = 0;
  PciHostWindow pci;
};

// SLP_TYP of \_S5 in our DSDT. The VMM's PM1a_CNT handler powers off when SLP_EN
// (bit 13) is written together with this SLP_TYP (bits 10-12).
inline constexpr uint8_t kS5SleepType = 5;

// Where the tables end up: the RSDP is the first byte of `bytes`, at guest
// physical address base_gpa (== rsdp_gpa).
struct AcpiImage {
  uint64_t base_gpa = 0;
  uint64_t rsdp_gpa = 0;
  std::vector<uint8_t> bytes;
};

// The blob never exceeds this many bytes (0xE0000..0xFFFFF, the BIOS area the
// VMM reserves in e820).
inline constexpr uint64_t kMaxAcpiImageSize = 128 * 1024;

// Lays out, in one contiguous blob at guest physical address base_gpa:
//   RSDP (revision 2), XSDT, RSDT, FADT, FACS, MADT, DSDT.
// XSDT and RSDT list the same tables (FADT, MADT); the 32-bit RSDT is there for
// parsers that predate ACPI 2.0, since every address here is below 4 GiB anyway.
// Throws std::invalid_argument for a platform description that is out of range
// (cpu_count, sci_irq, PCI windows, base_gpa not 16-byte aligned or the blob
// not below 4 GiB) and std::runtime_error if the tables exceed kMaxAcpiImageSize.
AcpiImage build_acpi_tables(const AcpiPlatform& platform, uint64_t base_gpa);

}  // namespace keel::acpi
