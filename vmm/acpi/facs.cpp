#include "vmm/acpi/facs.h"

#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

std::vector<uint8_t> make_facs() {
  // ACPI 6.3 §5.2.10, Table 5-37. No checksum: the FACS has no standard header.
  std::vector<uint8_t> facs(kFacsSize, 0);
  put_text(facs, 0, "FACS");
  put_u32(facs, 4, static_cast<uint32_t>(kFacsSize));
  // 8: hardware signature 0 (the platform never changes across an S4 resume)
  // 12, 24: waking vectors 0 (no S3); 16: global lock free; 20: flags none
  put_u8(facs, 32, 2);  // version 2 (ACPI 4.0 and later)
  return facs;
}

}  // namespace keel::acpi
