#include "vmm/acpi/root_tables.h"

#include <stdexcept>

#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

std::vector<uint8_t> make_xsdt(std::span<const uint64_t> table_gpas) {
  std::vector<uint8_t> xsdt = make_sdt("XSDT", 1, xsdt_size(table_gpas.size()));
  for (std::size_t i = 0; i < table_gpas.size(); ++i)
    put_u64(xsdt, kSdtHeaderSize + 8 * i, table_gpas[i]);
  finish_sdt(xsdt);
  return xsdt;
}

std::vector<uint8_t> make_rsdt(std::span<const uint64_t> table_gpas) {
  std::vector<uint8_t> rsdt = make_sdt("RSDT", 1, rsdt_size(table_gpas.size()));
  for (std::size_t i = 0; i < table_gpas.size(); ++i) {
    if (table_gpas[i] > UINT32_MAX) throw std::invalid_argument("RSDT entry above 4 GiB");
    put_u32(rsdt, kSdtHeaderSize + 4 * i, static_cast<uint32_t>(table_gpas[i]));
  }
  finish_sdt(rsdt);
  return rsdt;
}

}  // namespace keel::acpi
