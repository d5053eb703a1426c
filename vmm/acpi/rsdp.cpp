#include "vmm/acpi/rsdp.h"

#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

std::vector<uint8_t> make_rsdp(uint32_t rsdt_gpa, uint64_t xsdt_gpa) {
  // ACPI 6.3 §5.2.5.3, Table 5-27.
  std::vector<uint8_t> rsdp(kRsdpSize, 0);
  put_text(rsdp, 0, "RSD PTR ");
  // offset 8: checksum over the first 20 bytes (the ACPI 1.0 structure)
  put_text(rsdp, 9, kOemId);
  put_u8(rsdp, 15, 2);  // revision 2: ACPI 2.0 and later, XSDT valid
  put_u32(rsdp, 16, rsdt_gpa);
  put_u32(rsdp, 20, static_cast<uint32_t>(kRsdpSize));
  put_u64(rsdp, 24, xsdt_gpa);
  // offset 32: extended checksum over all 36 bytes; 33-35 reserved
  set_checksum(std::span<uint8_t>(rsdp).first(20), 8);
  set_checksum(rsdp, 32);
  return rsdp;
}

}  // namespace keel::acpi
