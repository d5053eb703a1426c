#include "vmm/acpi/acpi_tables.h"

#include <algorithm>
#include <array>
#include <span>
#include <stdexcept>
#include <string>

#include "vmm/acpi/dsdt.h"
#include "vmm/acpi/facs.h"
#include "vmm/acpi/fadt.h"
#include "vmm/acpi/madt.h"
#include "vmm/acpi/root_tables.h"
#include "vmm/acpi/rsdp.h"

namespace keel::acpi {

namespace {

constexpr uint32_t kMaxCpuCount = 255;       // xAPIC IDs 0..254; 255 is broadcast
constexpr std::size_t kRsdpAlignment = 16;   // ACPI 6.3 §5.2.5.1: RSDP on a 16-byte boundary
constexpr std::size_t kTableAlignment = 16;  // not required, keeps tables easy to spot in a dump
constexpr uint64_t k4GiB = uint64_t{1} << 32;
constexpr uint64_t kApicPageSize = 0x1000;

bool overlaps(uint64_t base, uint64_t size, uint64_t other_base, uint64_t other_size) {
  return size != 0 && other_size != 0 && base < other_base + other_size && other_base < base + size;
}

void validate(const AcpiPlatform& platform, uint64_t base_gpa) {
  if (platform.cpu_count < 1 || platform.cpu_count > kMaxCpuCount) {
    throw std::invalid_argument("ACPI: cpu_count must be 1..255, got " +
                                std::to_string(platform.cpu_count));
  }
  // The SCI needs an ISA IRQ for its override; IRQ 2 is the cascade and GSI 2 the PIT.
  if (platform.sci_irq < 1 || platform.sci_irq > 15 || platform.sci_irq == 2) {
    throw std::invalid_argument("ACPI: sci_irq must be an ISA IRQ 1..15 other than 2, got " +
                                std::to_string(platform.sci_irq));
  }
  if (platform.pm1a_evt_port == 0 || platform.pm1a_cnt_port == 0) {
    throw std::invalid_argument(
        "ACPI: PM1a event and control ports are required (not hardware-reduced)");
  }
  if (overlaps(platform.pm1a_evt_port, 4, platform.pm1a_cnt_port, 2)) {
    throw std::invalid_argument("ACPI: PM1a event and control blocks overlap");
  }
  const PciHostWindow& pci = platform.pci;
  if (overlaps(pci.mmio32_base, pci.mmio32_size, platform.ioapic_address, kApicPageSize) ||
      overlaps(pci.mmio32_base, pci.mmio32_size, platform.lapic_address, kApicPageSize)) {
    throw std::invalid_argument(
        "ACPI: PCI 32-bit MMIO window overlaps the I/O APIC or local APIC page");
  }
  if (base_gpa % kRsdpAlignment != 0) {
    throw std::invalid_argument("ACPI: base_gpa must be 16-byte aligned for the RSDP");
  }
}

// Hands out offsets in the blob, front to back, aligning guest physical
// addresses (base_gpa + offset), which is what the alignment rules are about.
class BlobLayout {
 public:
  explicit BlobLayout(uint64_t base_gpa) : base_gpa_(base_gpa) {}
  std::size_t place(std::size_t size, std::size_t alignment) {
    const uint64_t gpa = (base_gpa_ + end_ + alignment - 1) / alignment * alignment;
    const std::size_t at = static_cast<std::size_t>(gpa - base_gpa_);
    end_ = at + size;
    return at;
  }
  std::size_t size() const { return end_; }

 private:
  uint64_t base_gpa_;
  std::size_t end_ = 0;
};

void copy_into(std::vector<uint8_t>& blob, std::size_t offset, std::span<const uint8_t> table) {
  std::copy(table.begin(), table.end(), blob.begin() + static_cast<std::ptrdiff_t>(offset));
}

}  // namespace

AcpiImage build_acpi_tables(const AcpiPlatform& platform, uint64_t base_gpa) {
  validate(platform, base_gpa);

  // Tables that depend on no address first, so every size is known before layout.
  const std::vector<uint8_t> madt = make_madt(platform);
  const std::vector<uint8_t> dsdt = make_dsdt(platform.pci);
  const std::vector<uint8_t> facs = make_facs();
  constexpr std::size_t kRootEntries = 2;  // FADT, MADT

  BlobLayout layout(base_gpa);
  const std::size_t rsdp_at = layout.place(kRsdpSize, kRsdpAlignment);
  const std::size_t xsdt_at = layout.place(xsdt_size(kRootEntries), kTableAlignment);
  const std::size_t rsdt_at = layout.place(rsdt_size(kRootEntries), kTableAlignment);
  const std::size_t fadt_at = layout.place(kFadtSize, kTableAlignment);
  const std::size_t facs_at = layout.place(kFacsSize, kFacsAlignment);
  const std::size_t madt_at = layout.place(madt.size(), kTableAlignment);
  const std::size_t dsdt_at = layout.place(dsdt.size(), kTableAlignment);

  if (layout.size() > kMaxAcpiImageSize) {
    throw std::runtime_error("ACPI tables need " + std::to_string(layout.size()) +
                             " bytes, more than the " + std::to_string(kMaxAcpiImageSize) +
                             " reserved for them");
  }
  // RSDT, FADT.DSDT and FADT.FIRMWARE_CTRL hold 32-bit addresses.
  if (base_gpa >= k4GiB || layout.size() > k4GiB - base_gpa) {
    throw std::invalid_argument("ACPI: tables must lie below 4 GiB");
  }
  auto gpa = [base_gpa](std::size_t offset) { return base_gpa + offset; };
  auto gpa32 = [base_gpa](std::size_t offset) { return static_cast<uint32_t>(base_gpa + offset); };

  const std::array<uint64_t, kRootEntries> root_entries{gpa(fadt_at), gpa(madt_at)};
  const std::vector<uint8_t> fadt = make_fadt(platform, gpa32(dsdt_at), gpa32(facs_at));
  const std::vector<uint8_t> xsdt = make_xsdt(root_entries);
  const std::vector<uint8_t> rsdt = make_rsdt(root_entries);
  const std::vector<uint8_t> rsdp = make_rsdp(gpa32(rsdt_at), gpa(xsdt_at));

  AcpiImage image;
  image.base_gpa = base_gpa;
  image.rsdp_gpa = gpa(rsdp_at);
  image.bytes.assign(layout.size(), 0);
  copy_into(image.bytes, rsdp_at, rsdp);
  copy_into(image.bytes, xsdt_at, xsdt);
  copy_into(image.bytes, rsdt_at, rsdt);
  copy_into(image.bytes, fadt_at, fadt);
  copy_into(image.bytes, facs_at, facs);
  copy_into(image.bytes, madt_at, madt);
  copy_into(image.bytes, dsdt_at, dsdt);
  return image;
}

}  // namespace keel::acpi
