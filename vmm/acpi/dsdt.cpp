#include "vmm/acpi/dsdt.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

#include "vmm/acpi/dsdt_aml.h"
#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

namespace {

// AML encodings (ACPI 6.3 §20.2.5.1 NameOp, §20.2.3 QWordPrefix).
constexpr uint8_t kAmlNameOp = 0x08;
constexpr uint8_t kAmlQWordPrefix = 0x0E;
constexpr std::size_t kNameSegSize = 4;

constexpr uint64_t k4GiB = uint64_t{1} << 32;
constexpr uint64_t kFirstIoWindowPort =
    0x0D00;  // below: legacy ports and 0xCF8-0xCFF, always reported
constexpr uint64_t kIoSpaceEnd = 0x10000;

// Rewrites the QWord constant of `Name (<slot.name>, <placeholder>)`.
void patch_named_qword(std::vector<uint8_t>& aml, const DsdtPatchSlot& slot, uint64_t value) {
  std::array<uint8_t, 2 + kNameSegSize> pattern{};
  pattern[0] = kAmlNameOp;
  std::copy(slot.name.begin(), slot.name.end(), pattern.begin() + 1);
  pattern[1 + kNameSegSize] = kAmlQWordPrefix;

  auto found = std::search(aml.begin() + kSdtHeaderSize, aml.end(), pattern.begin(), pattern.end());
  const std::string where = "DSDT placeholder " + std::string(slot.name);
  if (found == aml.end()) throw std::logic_error(where + " not found in the compiled AML");
  if (std::search(found + 1, aml.end(), pattern.begin(), pattern.end()) != aml.end()) {
    throw std::logic_error(where + " occurs more than once in the compiled AML");
  }
  const std::size_t value_offset = static_cast<std::size_t>(found - aml.begin()) + pattern.size();
  if (get_le(aml, value_offset, 8) != slot.placeholder) {
    throw std::logic_error(where + " does not hold its placeholder value");
  }
  put_u64(aml, value_offset, value);
}

void validate(const PciHostWindow& pci) {
  if (pci.io_size != 0 &&
      (pci.io_base < kFirstIoWindowPort || uint64_t{pci.io_base} + pci.io_size > kIoSpaceEnd)) {
    throw std::invalid_argument("PCI I/O window must lie within ports 0x0D00-0xFFFF");
  }
  if (pci.mmio32_size != 0 &&
      (pci.mmio32_base >= k4GiB || pci.mmio32_size > k4GiB - pci.mmio32_base)) {
    throw std::invalid_argument("PCI 32-bit MMIO window must end at or below 4 GiB");
  }
  if (pci.mmio64_size != 0 &&
      (pci.mmio64_base < k4GiB || pci.mmio64_size - 1 > UINT64_MAX - pci.mmio64_base)) {
    throw std::invalid_argument("PCI 64-bit MMIO window must start at or above 4 GiB and not wrap");
  }
}

}  // namespace

std::vector<uint8_t> make_dsdt(const PciHostWindow& pci) {
  validate(pci);
  std::span<const uint8_t> compiled = compiled_dsdt_aml();
  std::vector<uint8_t> aml(compiled.begin(), compiled.end());
  if (aml.size() < kSdtHeaderSize || get_le(aml, 4, 4) != aml.size()) {
    throw std::logic_error("compiled DSDT is truncated");
  }
  // A zero length disables the window in _CRS; its base is then irrelevant.
  patch_named_qword(aml, kIoWindowBase, pci.io_base);
  patch_named_qword(aml, kIoWindowLength, pci.io_size);
  patch_named_qword(aml, kMmio32WindowBase, pci.mmio32_base);
  patch_named_qword(aml, kMmio32WindowLength, pci.mmio32_size);
  patch_named_qword(aml, kMmio64WindowBase, pci.mmio64_base);
  patch_named_qword(aml, kMmio64WindowLength, pci.mmio64_size);
  finish_sdt(aml);
  return aml;
}

}  // namespace keel::acpi
