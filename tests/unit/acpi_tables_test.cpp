// Unit tests for keel::acpi::build_acpi_tables: the blob is parsed here the way
// a guest OS would (from the RSDP down), with readers independent of the code
// under test.
#include "vmm/acpi/acpi_tables.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace keel::acpi {
namespace {

constexpr uint64_t kBase = 0xE0000;

// Read-only view of the image addressed by guest physical address.
class GuestView {
 public:
  explicit GuestView(const AcpiImage& image) : image_(image) {}

  bool contains(uint64_t gpa, uint64_t size) const {
    return gpa >= image_.base_gpa && size <= image_.bytes.size() &&
           gpa - image_.base_gpa <= image_.bytes.size() - size;
  }
  std::span<const uint8_t> at(uint64_t gpa, uint64_t size) const {
    if (!contains(gpa, size)) throw std::out_of_range("outside the ACPI image");
    return std::span<const uint8_t>(image_.bytes).subspan(gpa - image_.base_gpa, size);
  }
  // A whole table whose 32-bit length field sits at offset 4.
  std::span<const uint8_t> table(uint64_t gpa) const { return at(gpa, le(at(gpa, 8), 4, 4)); }

  static uint64_t le(std::span<const uint8_t> b, std::size_t off, std::size_t width) {
    if (off + width > b.size()) throw std::out_of_range("field outside table");
    uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v |= uint64_t{b[off + i]} << (8 * i);
    return v;
  }
  static std::string text(std::span<const uint8_t> b, std::size_t off, std::size_t n) {
    return std::string(b.begin() + off, b.begin() + off + n);
  }

 private:
  const AcpiImage& image_;
};

uint8_t sum(std::span<const uint8_t> bytes) {
  unsigned s = 0;
  for (uint8_t b : bytes) s += b;
  return static_cast<uint8_t>(s);
}

uint64_t le(std::span<const uint8_t> b, std::size_t off, std::size_t width) {
  return GuestView::le(b, off, width);
}
std::string text(std::span<const uint8_t> b, std::size_t off, std::size_t n) {
  return GuestView::text(b, off, n);
}

// Signature -> address of each table reachable from the RSDP.
struct TableDirectory {
  uint64_t rsdp = 0, xsdt = 0, rsdt = 0, fadt = 0, madt = 0, dsdt = 0, facs = 0;
};

TableDirectory walk(const AcpiImage& image) {
  GuestView view(image);
  TableDirectory dir;
  dir.rsdp = image.rsdp_gpa;
  auto rsdp = view.at(dir.rsdp, 36);
  dir.rsdt = le(rsdp, 16, 4);
  dir.xsdt = le(rsdp, 24, 8);
  auto xsdt = view.table(dir.xsdt);
  for (std::size_t off = 36; off + 8 <= xsdt.size(); off += 8) {
    uint64_t gpa = le(xsdt, off, 8);
    std::string sig = text(view.at(gpa, 4), 0, 4);
    if (sig == "FACP") dir.fadt = gpa;
    if (sig == "APIC") dir.madt = gpa;
  }
  auto fadt = view.table(dir.fadt);
  dir.dsdt = le(fadt, 140, 8);
  dir.facs = le(fadt, 132, 8);
  return dir;
}

AcpiImage build(uint32_t cpus) {
  AcpiPlatform platform;
  platform.cpu_count = cpus;
  return build_acpi_tables(platform, kBase);
}

TEST(AcpiTables, RsdpIsFirstWithBothChecksumsAndRevision2) {
  AcpiImage image = build(2);
  EXPECT_EQ(image.base_gpa, kBase);
  EXPECT_EQ(image.rsdp_gpa, kBase);
  EXPECT_EQ(image.rsdp_gpa % 16, 0u);
  GuestView view(image);
  auto rsdp = view.at(image.rsdp_gpa, 36);
  EXPECT_EQ(text(rsdp, 0, 8), "RSD PTR ");
  EXPECT_EQ(sum(rsdp.first(20)), 0) << "ACPI 1.0 checksum";
  EXPECT_EQ(sum(rsdp), 0) << "extended checksum";
  EXPECT_EQ(text(rsdp, 9, 6), "KEEL  ");
  EXPECT_EQ(rsdp[15], 2);
  EXPECT_EQ(le(rsdp, 20, 4), 36u);
  EXPECT_NE(le(rsdp, 24, 8), 0u) << "XSDT address";
  EXPECT_NE(le(rsdp, 16, 4), 0u) << "RSDT address";
}

TEST(AcpiTables, XsdtAndRsdtListFadtAndMadtInsideTheBlob) {
  AcpiImage image = build(4);
  GuestView view(image);
  TableDirectory dir = walk(image);
  auto xsdt = view.table(dir.xsdt);
  auto rsdt = view.table(dir.rsdt);
  EXPECT_EQ(text(xsdt, 0, 4), "XSDT");
  EXPECT_EQ(text(rsdt, 0, 4), "RSDT");
  ASSERT_EQ((xsdt.size() - 36) % 8, 0u);
  ASSERT_EQ((rsdt.size() - 36) % 4, 0u);
  const std::size_t entries = (xsdt.size() - 36) / 8;
  ASSERT_EQ(entries, 2u);
  ASSERT_EQ((rsdt.size() - 36) / 4, entries);
  std::vector<std::string> signatures;
  for (std::size_t i = 0; i < entries; ++i) {
    uint64_t gpa = le(xsdt, 36 + 8 * i, 8);
    EXPECT_EQ(le(rsdt, 36 + 4 * i, 4), gpa) << "RSDT and XSDT disagree at entry " << i;
    ASSERT_TRUE(view.contains(gpa, 36)) << "entry " << i << " points outside the blob";
    signatures.push_back(text(view.at(gpa, 4), 0, 4));
  }
  std::sort(signatures.begin(), signatures.end());
  EXPECT_EQ(signatures, (std::vector<std::string>{"APIC", "FACP"}));
  EXPECT_NE(dir.fadt, 0u);
  EXPECT_NE(dir.madt, 0u);
}

TEST(AcpiTables, EveryTableHasLengthChecksumAndKeelIds) {
  AcpiImage image = build(8);
  GuestView view(image);
  TableDirectory dir = walk(image);
  const std::map<std::string, uint64_t> tables{{"XSDT", dir.xsdt},
                                               {"RSDT", dir.rsdt},
                                               {"FACP", dir.fadt},
                                               {"APIC", dir.madt},
                                               {"DSDT", dir.dsdt}};
  for (const auto& [signature, gpa] : tables) {
    SCOPED_TRACE(signature);
    ASSERT_TRUE(view.contains(gpa, 36));
    uint64_t length = le(view.at(gpa, 8), 4, 4);
    ASSERT_GE(length, 36u);
    ASSERT_TRUE(view.contains(gpa, length));
    auto table = view.table(gpa);
    EXPECT_EQ(text(table, 0, 4), signature);
    EXPECT_EQ(sum(table), 0);
    EXPECT_EQ(text(table, 10, 6), "KEEL  ");
    EXPECT_EQ(text(table, 16, 8), "KEELVMM ");
    EXPECT_NE(le(table, 28, 4), 0u) << "creator ID";
  }
  // The FACS has no checksum, but must be 64 bytes on a 64-byte boundary.
  auto facs = view.at(dir.facs, 64);
  EXPECT_EQ(dir.facs % 64, 0u);
  EXPECT_EQ(text(facs, 0, 4), "FACS");
  EXPECT_EQ(le(facs, 4, 4), 64u);
  EXPECT_EQ(facs[32], 2) << "FACS version";
}

TEST(AcpiTables, TablesDoNotOverlap) {
  AcpiImage image = build(16);
  GuestView view(image);
  TableDirectory dir = walk(image);
  std::vector<std::pair<uint64_t, uint64_t>> ranges{{dir.rsdp, 36}, {dir.facs, 64}};
  for (uint64_t gpa : {dir.xsdt, dir.rsdt, dir.fadt, dir.madt, dir.dsdt}) {
    ranges.emplace_back(gpa, view.table(gpa).size());
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].first + ranges[i - 1].second, ranges[i].first);
  }
}

TEST(AcpiTables, FadtDescribesPmBlocksSciResetAndDsdt) {
  AcpiPlatform platform;
  platform.cpu_count = 2;
  platform.sci_irq = 9;
  platform.pm1a_evt_port = 0x600;
  platform.pm1a_cnt_port = 0x604;
  AcpiImage image = build_acpi_tables(platform, kBase);
  GuestView view(image);
  TableDirectory dir = walk(image);
  auto fadt = view.table(dir.fadt);
  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(fadt[8], 6) << "revision";
  EXPECT_EQ(fadt[131], 3) << "minor revision";

  EXPECT_EQ(le(fadt, 40, 4), dir.dsdt) << "DSDT and X_DSDT agree";
  EXPECT_EQ(le(fadt, 36, 4), dir.facs) << "FIRMWARE_CTRL and X_FIRMWARE_CTRL agree";
  EXPECT_EQ(text(view.at(dir.dsdt, 4), 0, 4), "DSDT");

  EXPECT_EQ(le(fadt, 46, 2), 9u) << "SCI_INT";
  EXPECT_EQ(le(fadt, 48, 4), 0u) << "SMI_CMD: ACPI always enabled";
  EXPECT_EQ(fadt[52], 0);
  EXPECT_EQ(fadt[53], 0);
  EXPECT_EQ(le(fadt, 56, 4), 0x600u) << "PM1a_EVT_BLK";
  EXPECT_EQ(le(fadt, 60, 4), 0u) << "PM1b_EVT_BLK";
  EXPECT_EQ(le(fadt, 64, 4), 0x604u) << "PM1a_CNT_BLK";
  EXPECT_EQ(le(fadt, 76, 4), 0u) << "PM_TMR_BLK";
  EXPECT_EQ(le(fadt, 80, 4), 0u) << "GPE0_BLK";
  EXPECT_EQ(fadt[88], 4) << "PM1_EVT_LEN";
  EXPECT_EQ(fadt[89], 2) << "PM1_CNT_LEN";
  EXPECT_EQ(fadt[91], 0) << "PM_TMR_LEN";

  const uint64_t flags = le(fadt, 112, 4);
  EXPECT_TRUE(flags & (1u << 0)) << "WBINVD";
  EXPECT_TRUE(flags & (1u << 2)) << "PROC_C1";
  EXPECT_FALSE(flags & (1u << 4)) << "PWR_BUTTON clear: fixed-feature power button";
  EXPECT_TRUE(flags & (1u << 5)) << "SLP_BUTTON set: no sleep button";
  EXPECT_TRUE(flags & (1u << 10)) << "RESET_REG_SUP";
  EXPECT_FALSE(flags & (1u << 20)) << "not HW_REDUCED_ACPI";

  const uint64_t boot_arch = le(fadt, 109, 2);
  EXPECT_TRUE(boot_arch & (1u << 1)) << "8042 present";
  EXPECT_TRUE(boot_arch & (1u << 2)) << "VGA not present";
  EXPECT_FALSE(boot_arch & (1u << 3)) << "MSI supported";
  EXPECT_FALSE(boot_arch & (1u << 5)) << "CMOS RTC present";

  // RESET_REG: system I/O, 8 bits at 0x64, value 0xFE.
  EXPECT_EQ(fadt[116], 1);
  EXPECT_EQ(fadt[117], 8);
  EXPECT_EQ(fadt[118], 0);
  EXPECT_EQ(le(fadt, 120, 8), 0x64u);
  EXPECT_EQ(fadt[128], 0xFE);

  // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK: system I/O, 32 and 16 bits.
  EXPECT_EQ(fadt[148], 1);
  EXPECT_EQ(fadt[149], 32);
  EXPECT_EQ(le(fadt, 152, 8), 0x600u);
  EXPECT_EQ(fadt[172], 1);
  EXPECT_EQ(fadt[173], 16);
  EXPECT_EQ(le(fadt, 176, 8), 0x604u);
  EXPECT_EQ(le(fadt, 208 + 4, 8), 0u) << "X_PM_TMR_BLK";
}

TEST(AcpiTables, FadtFollowsCustomPorts) {
  AcpiPlatform platform;
  platform.cpu_count = 1;
  platform.sci_irq = 10;
  platform.pm1a_evt_port = 0xB000;
  platform.pm1a_cnt_port = 0xB004;
  platform.reset_port = 0xCF9;
  platform.reset_value = 0x06;
  AcpiImage image = build_acpi_tables(platform, kBase);
  GuestView view(image);
  auto fadt = view.table(walk(image).fadt);
  EXPECT_EQ(le(fadt, 46, 2), 10u);
  EXPECT_EQ(le(fadt, 56, 4), 0xB000u);
  EXPECT_EQ(le(fadt, 64, 4), 0xB004u);
  EXPECT_EQ(le(fadt, 152, 8), 0xB000u);
  EXPECT_EQ(le(fadt, 176, 8), 0xB004u);
  EXPECT_EQ(le(fadt, 120, 8), 0xCF9u);
  EXPECT_EQ(fadt[128], 0x06);
  EXPECT_EQ(fadt[108], 0) << "no century byte unless the platform names one";
  platform.rtc_century_index = 0x32;
  AcpiImage with_century = build_acpi_tables(platform, kBase);
  GuestView view2(with_century);
  EXPECT_EQ(view2.table(walk(with_century).fadt)[108], 0x32);
}

struct MadtEntries {
  std::vector<std::pair<uint8_t, uint8_t>> lapics;  // (uid, apic id), enabled only
  int disabled_lapics = 0;
  struct IoApic {
    uint8_t id;
    uint32_t address, gsi_base;
  };
  std::vector<IoApic> ioapics;
  std::map<uint8_t, std::pair<uint32_t, uint16_t>> overrides;  // irq -> (gsi, flags)
  struct Nmi {
    uint8_t uid;
    uint16_t flags;
    uint8_t lint;
  };
  std::vector<Nmi> nmis;
  int unknown = 0;
};

MadtEntries parse_madt(std::span<const uint8_t> madt) {
  MadtEntries out;
  std::size_t off = 44;
  while (off < madt.size()) {
    if (off + 2 > madt.size()) throw std::runtime_error("truncated MADT entry header");
    const uint8_t type = madt[off], length = madt[off + 1];
    if (length < 2 || off + length > madt.size()) throw std::runtime_error("bad MADT entry length");
    auto e = madt.subspan(off, length);
    switch (type) {
      case 0:
        if (length != 8) throw std::runtime_error("bad LAPIC length");
        if (le(e, 4, 4) & 1)
          out.lapics.emplace_back(e[2], e[3]);
        else
          ++out.disabled_lapics;
        break;
      case 1:
        if (length != 12) throw std::runtime_error("bad IOAPIC length");
        out.ioapics.push_back(
            {e[2], static_cast<uint32_t>(le(e, 4, 4)), static_cast<uint32_t>(le(e, 8, 4))});
        break;
      case 2:
        if (length != 10 || e[2] != 0) throw std::runtime_error("bad override");
        out.overrides[e[3]] = {static_cast<uint32_t>(le(e, 4, 4)),
                               static_cast<uint16_t>(le(e, 8, 2))};
        break;
      case 4:
        if (length != 6) throw std::runtime_error("bad LAPIC NMI length");
        out.nmis.push_back({e[2], static_cast<uint16_t>(le(e, 3, 2)), e[5]});
        break;
      default:
        ++out.unknown;
    }
    off += length;
  }
  if (off != madt.size()) throw std::runtime_error("MADT entries overrun the table");
  return out;
}

class MadtForCpuCount : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MadtForCpuCount, OneEnabledLapicPerCpuOneIoApicOverridesAndNmi) {
  const uint32_t cpus = GetParam();
  AcpiImage image = build(cpus);
  GuestView view(image);
  auto madt = view.table(walk(image).madt);
  EXPECT_EQ(le(madt, 36, 4), 0xFEE00000u) << "local APIC address";
  EXPECT_EQ(le(madt, 40, 4) & 1, 1u) << "PCAT_COMPAT";

  MadtEntries entries = parse_madt(madt);
  ASSERT_EQ(entries.lapics.size(), cpus);
  EXPECT_EQ(entries.disabled_lapics, 0);
  for (uint32_t i = 0; i < cpus; ++i) {
    EXPECT_EQ(entries.lapics[i].first, i) << "processor UID";
    EXPECT_EQ(entries.lapics[i].second, i) << "APIC ID";
  }
  ASSERT_EQ(entries.ioapics.size(), 1u);
  EXPECT_EQ(entries.ioapics[0].id, 0);
  EXPECT_EQ(entries.ioapics[0].address, 0xFEC00000u);
  EXPECT_EQ(entries.ioapics[0].gsi_base, 0u);

  ASSERT_EQ(entries.overrides.size(), 2u);
  ASSERT_TRUE(entries.overrides.count(0));
  EXPECT_EQ(entries.overrides[0].first, 2u) << "IRQ0 -> GSI2";
  EXPECT_EQ(entries.overrides[0].second, 0u) << "bus-conforming";
  ASSERT_TRUE(entries.overrides.count(9));
  EXPECT_EQ(entries.overrides[9].first, 9u) << "SCI IRQ9 -> GSI9";
  EXPECT_EQ(entries.overrides[9].second, 0x000Du) << "level, active-high";

  ASSERT_EQ(entries.nmis.size(), 1u);
  EXPECT_EQ(entries.nmis[0].uid, 0xFF) << "all processors";
  EXPECT_EQ(entries.nmis[0].lint, 1) << "LINT1";
  EXPECT_EQ(entries.unknown, 0);
}

INSTANTIATE_TEST_SUITE_P(CpuCounts, MadtForCpuCount, ::testing::Values(1u, 2u, 4u, 64u, 255u));

TEST(AcpiTables, MadtFollowsPlatformAddressesAndSci) {
  AcpiPlatform platform;
  platform.cpu_count = 3;
  platform.lapic_address = 0xFEE01000;
  platform.ioapic_address = 0xFEC01000;
  platform.ioapic_id = 3;
  platform.sci_irq = 11;
  AcpiImage image = build_acpi_tables(platform, kBase);
  GuestView view(image);
  auto madt = view.table(walk(image).madt);
  EXPECT_EQ(le(madt, 36, 4), 0xFEE01000u);
  MadtEntries entries = parse_madt(madt);
  ASSERT_EQ(entries.ioapics.size(), 1u);
  EXPECT_EQ(entries.ioapics[0].id, 3);
  EXPECT_EQ(entries.ioapics[0].address, 0xFEC01000u);
  ASSERT_TRUE(entries.overrides.count(11));
  EXPECT_EQ(entries.overrides[11].first, 11u);
  EXPECT_EQ(entries.overrides[11].second, 0x000Du);
}

// Finds `needle` in the DSDT body; returns its offset.
std::optional<std::size_t> find(std::span<const uint8_t> haystack,
                                const std::vector<uint8_t>& needle, std::size_t from = 36) {
  auto it = std::search(haystack.begin() + from, haystack.end(), needle.begin(), needle.end());
  if (it == haystack.end()) return std::nullopt;
  return static_cast<std::size_t>(it - haystack.begin());
}

std::vector<uint8_t> bytes_of(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// Reads an AML integer: ZeroOp, OneOp, or Byte/Word/DWord/QWord prefix + data.
uint64_t aml_integer(std::span<const uint8_t> aml, std::size_t off) {
  switch (aml[off]) {
    case 0x00:
      return 0;
    case 0x01:
      return 1;
    case 0x0A:
      return le(aml, off + 1, 1);
    case 0x0B:
      return le(aml, off + 1, 2);
    case 0x0C:
      return le(aml, off + 1, 4);
    case 0x0E:
      return le(aml, off + 1, 8);
    default:
      throw std::runtime_error("not an AML integer");
  }
}

TEST(AcpiTables, DsdtDefinesS5WithSleepType5) {
  ASSERT_EQ(kS5SleepType, 5);
  AcpiImage image = build(1);
  GuestView view(image);
  auto dsdt = view.table(walk(image).dsdt);
  EXPECT_EQ(dsdt[8], 2) << "revision 2: 64-bit AML integers";
  // NameOp "_S5_" PackageOp PkgLength NumElements elements...
  auto at = find(dsdt, {0x08, '_', 'S', '5', '_', 0x12});
  ASSERT_TRUE(at.has_value()) << "no Name (_S5, Package ...) in the DSDT";
  std::size_t p = *at + 6;
  ASSERT_EQ(dsdt[p] & 0xC0, 0) << "expected a one-byte PkgLength";
  ++p;
  EXPECT_EQ(dsdt[p], 4) << "four package elements";
  ++p;
  EXPECT_EQ(aml_integer(dsdt, p), kS5SleepType) << "SLP_TYP for PM1a_CNT";
}

TEST(AcpiTables, DsdtHasPciHostBridgeAndCom1) {
  AcpiImage image = build(1);
  GuestView view(image);
  auto dsdt = view.table(walk(image).dsdt);
  EXPECT_TRUE(find(dsdt, bytes_of("PCI0")).has_value());
  EXPECT_TRUE(find(dsdt, bytes_of("COM1")).has_value());
  // EisaId("PNP0A08") = 0x080AD041, EisaId("PNP0A03") = 0x030AD041, EisaId("PNP0501") = 0x0105D041.
  EXPECT_TRUE(find(dsdt, {0x08, '_', 'H', 'I', 'D', 0x0C, 0x41, 0xD0, 0x0A, 0x08}).has_value());
  EXPECT_TRUE(find(dsdt, {0x08, '_', 'C', 'I', 'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03}).has_value());
  EXPECT_TRUE(find(dsdt, {0x08, '_', 'H', 'I', 'D', 0x0C, 0x41, 0xD0, 0x05, 0x01}).has_value());
  // RTC (PNP0B00 = 0x000BD041), PS/2 controller (PNP0303 = 0x0303D041), pvpanic ("QEMU0001").
  EXPECT_TRUE(find(dsdt, {0x08, '_', 'H', 'I', 'D', 0x0C, 0x41, 0xD0, 0x0B, 0x00}).has_value());
  EXPECT_TRUE(find(dsdt, {0x08, '_', 'H', 'I', 'D', 0x0C, 0x41, 0xD0, 0x03, 0x03}).has_value());
  EXPECT_TRUE(find(dsdt, bytes_of("QEMU0001")).has_value());
}

uint64_t named_qword(std::span<const uint8_t> dsdt, const std::string& name) {
  std::vector<uint8_t> pattern{0x08};
  pattern.insert(pattern.end(), name.begin(), name.end());
  pattern.push_back(0x0E);
  auto at = find(dsdt, pattern);
  if (!at) throw std::runtime_error("no QWord Name " + name);
  if (find(dsdt, pattern, *at + 1)) throw std::runtime_error("duplicate Name " + name);
  return le(dsdt, *at + pattern.size(), 8);
}

TEST(AcpiTables, DsdtCarriesThePciWindows) {
  AcpiPlatform platform;
  platform.cpu_count = 1;
  platform.pci.mmio32_base = 0xC0000000;
  platform.pci.mmio32_size = 0x3C000000;
  platform.pci.mmio64_base = 0x100'0000'0000;
  platform.pci.mmio64_size = 0x40'0000'0000;
  platform.pci.io_base = 0x1000;
  platform.pci.io_size = 0xF000;
  AcpiImage image = build_acpi_tables(platform, kBase);
  GuestView view(image);
  auto dsdt = view.table(walk(image).dsdt);
  EXPECT_EQ(sum(dsdt), 0);
  EXPECT_EQ(named_qword(dsdt, "IOWB"), 0x1000u);
  EXPECT_EQ(named_qword(dsdt, "IOWL"), 0xF000u);
  EXPECT_EQ(named_qword(dsdt, "M32B"), 0xC0000000u);
  EXPECT_EQ(named_qword(dsdt, "M32L"), 0x3C000000u);
  EXPECT_EQ(named_qword(dsdt, "M64B"), 0x100'0000'0000u);
  EXPECT_EQ(named_qword(dsdt, "M64L"), 0x40'0000'0000u);
  // No placeholder ("KEELP" pattern) survives.
  EXPECT_FALSE(find(dsdt, {0x00, 0x00, 0x50, 0x4C, 0x45, 0x45, 0x4B}).has_value());
}

TEST(AcpiTables, DsdtWithoutOptionalWindowsHasZeroLengths) {
  AcpiPlatform platform;
  platform.cpu_count = 1;
  platform.pci.mmio64_size = 0;
  platform.pci.io_size = 0;
  AcpiImage image = build_acpi_tables(platform, kBase);
  GuestView view(image);
  auto dsdt = view.table(walk(image).dsdt);
  EXPECT_EQ(named_qword(dsdt, "IOWL"), 0u);
  EXPECT_EQ(named_qword(dsdt, "M64L"), 0u);
  EXPECT_EQ(named_qword(dsdt, "M32L"), 0x3C000000u) << "default 32-bit hole";
}

TEST(AcpiTables, BlobFitsIn128KiBEvenWith255Cpus) {
  AcpiImage image = build(255);
  EXPECT_LE(image.bytes.size(), kMaxAcpiImageSize);
  EXPECT_LE(image.base_gpa + image.bytes.size(), 0x100000u) << "stays in the BIOS area";
}

TEST(AcpiTables, BuildIsDeterministic) {
  EXPECT_EQ(build(4).bytes, build(4).bytes);
}

TEST(AcpiTables, WorksAtAnother16ByteAlignedBase) {
  AcpiPlatform platform;
  platform.cpu_count = 2;
  AcpiImage image = build_acpi_tables(platform, 0x9FC10);
  TableDirectory dir = walk(image);
  EXPECT_EQ(image.rsdp_gpa, 0x9FC10u);
  EXPECT_EQ(dir.facs % 64, 0u);
  GuestView view(image);
  EXPECT_EQ(sum(view.table(dir.dsdt)), 0);
}

TEST(AcpiTables, RejectsCpuCountOutOfRange) {
  AcpiPlatform platform;
  platform.cpu_count = 0;
  EXPECT_THROW(build_acpi_tables(platform, kBase), std::invalid_argument);
  platform.cpu_count = 256;
  EXPECT_THROW(build_acpi_tables(platform, kBase), std::invalid_argument);
  platform.cpu_count = 255;
  EXPECT_NO_THROW(build_acpi_tables(platform, kBase));
}

TEST(AcpiTables, RejectsBadSci) {
  for (uint16_t irq : {0, 2, 16, 255}) {
    AcpiPlatform platform;
    platform.sci_irq = irq;
    EXPECT_THROW(build_acpi_tables(platform, kBase), std::invalid_argument) << "sci_irq " << irq;
  }
}

TEST(AcpiTables, RejectsBadPmPorts) {
  AcpiPlatform platform;
  platform.pm1a_cnt_port = 0;
  EXPECT_THROW(build_acpi_tables(platform, kBase), std::invalid_argument);
  platform.pm1a_cnt_port = 0x602;  // inside the 4-byte event block
  EXPECT_THROW(build_acpi_tables(platform, kBase), std::invalid_argument);
}

TEST(AcpiTables, RejectsBadBase) {
  AcpiPlatform platform;
  EXPECT_THROW(build_acpi_tables(platform, 0xE0008), std::invalid_argument)
      << "not 16-byte aligned";
  EXPECT_THROW(build_acpi_tables(platform, 0xFFFFFF00), std::invalid_argument) << "crosses 4 GiB";
  EXPECT_THROW(build_acpi_tables(platform, uint64_t{1} << 32), std::invalid_argument)
      << "above 4 GiB";
}

TEST(AcpiTables, RejectsPciWindowsThatCannotBeDescribed) {
  auto with = [](auto change) {
    AcpiPlatform platform;
    change(platform.pci);
    return platform;
  };
  const std::vector<AcpiPlatform> bad{
      with([](PciHostWindow& w) { w.io_base = 0xCF8; }),  // over config ports
      with([](PciHostWindow& w) {
        w.io_base = 0x1000;
        w.io_size = 0xF001;
      }),  // past 0xFFFF
      with([](PciHostWindow& w) {
        w.mmio32_base = 0xF0000000;
        w.mmio32_size = 0x20000000;
      }),                                                          // past 4 GiB
      with([](PciHostWindow& w) { w.mmio32_size = 0x3EC00001; }),  // into the IOAPIC
      with([](PciHostWindow& w) {
        w.mmio32_base = 0xFEE00000;
        w.mmio32_size = 0x1000;
      }),  // the LAPIC
      with([](PciHostWindow& w) {
        w.mmio64_base = 0x80000000;
        w.mmio64_size = 0x1000;
      }),  // below 4 GiB
      with([](PciHostWindow& w) {
        w.mmio64_base = ~uint64_t{0} - 0xFFF;
        w.mmio64_size = 0x2000;
      }),  // wraps
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    EXPECT_THROW(build_acpi_tables(bad[i], kBase), std::invalid_argument) << "case " << i;
  }
  // Edges that are fine.
  EXPECT_NO_THROW(build_acpi_tables(with([](PciHostWindow& w) {
                                      w.io_base = 0xD00;
                                      w.io_size = 0xF300;
                                    }),
                                    kBase));
  EXPECT_NO_THROW(
      build_acpi_tables(with([](PciHostWindow& w) { w.mmio32_size = 0x3EC00000; }), kBase));
  EXPECT_NO_THROW(build_acpi_tables(with([](PciHostWindow& w) {
                                      w.mmio64_base = ~uint64_t{0} - 0xFFF;
                                      w.mmio64_size = 0x1000;
                                    }),
                                    kBase));
  EXPECT_NO_THROW(build_acpi_tables(with([](PciHostWindow& w) {
                                      w.io_base = 0;
                                      w.io_size = 0;
                                    }),
                                    kBase))
      << "a zero-size window's base is ignored";
}

}  // namespace
}  // namespace keel::acpi
