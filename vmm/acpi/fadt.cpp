#include "vmm/acpi/fadt.h"

#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

namespace {

// PM1 block lengths in bytes (ACPI 6.3 §4.8.3.1, §4.8.3.2).
constexpr uint8_t kPm1EventLength = 4;    // PM1_STS + PM1_EN, 16 bits each
constexpr uint8_t kPm1ControlLength = 2;  // PM1_CNT, 16 bits

}  // namespace

std::vector<uint8_t> make_fadt(const AcpiPlatform& platform, uint32_t dsdt_gpa, uint32_t facs_gpa) {
  // Offsets: ACPI 6.3 §5.2.9, Table 5-33.
  std::vector<uint8_t> fadt = make_sdt("FACP", kFadtRevision, kFadtSize);
  put_u32(fadt, 36, facs_gpa);  // FIRMWARE_CTRL (X_FIRMWARE_CTRL holds the same)
  put_u32(fadt, 40, dsdt_gpa);  // DSDT (X_DSDT holds the same)
  // 44: reserved; 45: Preferred_PM_Profile 0 = unspecified
  put_u16(fadt, 46, platform.sci_irq);  // SCI_INT
  // 48: SMI_CMD 0, 52/53: ACPI_ENABLE/ACPI_DISABLE 0, 54: S4BIOS_REQ 0, 55: PSTATE_CNT 0
  put_u32(fadt, 56, platform.pm1a_evt_port);  // PM1a_EVT_BLK
  // 60: PM1b_EVT_BLK 0
  put_u32(fadt, 64, platform.pm1a_cnt_port);  // PM1a_CNT_BLK
  // 68: PM1b_CNT_BLK, 72: PM2_CNT_BLK, 76: PM_TMR_BLK, 80/84: GPE0/GPE1_BLK: all 0
  put_u8(fadt, 88, kPm1EventLength);    // PM1_EVT_LEN
  put_u8(fadt, 89, kPm1ControlLength);  // PM1_CNT_LEN
  // 90-95: PM2_CNT_LEN, PM_TMR_LEN, GPE0/1_BLK_LEN, GPE1_BASE, CST_CNT: 0
  // C2/C3 are not supported: latencies above 100 / 1000 us say so (Table 5-33).
  put_u16(fadt, 96, 101);   // P_LVL2_LAT
  put_u16(fadt, 98, 1001);  // P_LVL3_LAT
  // 100-107: FLUSH_SIZE, FLUSH_STRIDE, DUTY_*, alarms: 0
  put_u8(fadt, 108, platform.rtc_century_index);  // CENTURY: the RTC's CMOS index of it
  put_u16(fadt, 109,
          kBootArchLegacyDevices | kBootArch8042 | kBootArchVgaNotPresent);  // IAPC_BOOT_ARCH
  // 111: reserved
  put_u32(fadt, 112,
          kFadtWbinvd | kFadtProcC1 | kFadtSleepButtonIsControlMethod | kFadtFixRtc |
              kFadtResetRegSupported);
  put_generic_address(fadt, 116,
                      {.space = AddressSpace::kSystemIo,
                       .bit_width = 8,
                       .bit_offset = 0,
                       .access_size = AccessSize::kByte,
                       .address = platform.reset_port});  // RESET_REG
  put_u8(fadt, 128, platform.reset_value);                // RESET_VALUE
  // 129: ARM_BOOT_ARCH 0
  put_u8(fadt, 131, kFadtMinorRevision);  // FADT Minor Version
  put_u64(fadt, 132, facs_gpa);           // X_FIRMWARE_CTRL
  put_u64(fadt, 140, dsdt_gpa);           // X_DSDT
  // The PM1 registers are 16 bits wide: word accesses.
  put_generic_address(fadt, 148,
                      {.space = AddressSpace::kSystemIo,
                       .bit_width = kPm1EventLength * 8,
                       .bit_offset = 0,
                       .access_size = AccessSize::kWord,
                       .address = platform.pm1a_evt_port});  // X_PM1a_EVT_BLK
  // 160: X_PM1b_EVT_BLK 0
  put_generic_address(fadt, 172,
                      {.space = AddressSpace::kSystemIo,
                       .bit_width = kPm1ControlLength * 8,
                       .bit_offset = 0,
                       .access_size = AccessSize::kWord,
                       .address = platform.pm1a_cnt_port});  // X_PM1a_CNT_BLK
  // 184-267: X_PM1b_CNT, X_PM2_CNT, X_PM_TMR, X_GPE0/1, SLEEP_CONTROL/STATUS: 0
  put_text(fadt, 268, "KEELVMM ");  // Hypervisor Vendor Identity (8 bytes)
  finish_sdt(fadt);
  return fadt;
}

}  // namespace keel::acpi
