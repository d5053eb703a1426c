#include "vmm/acpi/madt.h"

#include <stdexcept>

#include "vmm/acpi/table_bytes.h"

namespace keel::acpi {

namespace {

// Structure lengths (ACPI 6.3 §5.2.12.2, .3, .5, .7).
constexpr std::size_t kMadtFixedSize = 44;  // header + local APIC address + flags
constexpr std::size_t kLocalApicSize = 8;
constexpr std::size_t kIoApicSize = 12;
constexpr std::size_t kSourceOverrideSize = 10;
constexpr std::size_t kLocalApicNmiSize = 6;
constexpr std::size_t kSourceOverrideCount = 2;

constexpr uint32_t kLocalApicEnabled = 1u << 0;
constexpr uint8_t kAllProcessors = 0xFF;
constexpr uint8_t kIsaBus = 0;
constexpr uint8_t kPitIsaIrq = 0;
constexpr uint32_t kPitGsi = 2;

class MadtWriter {
 public:
  explicit MadtWriter(std::vector<uint8_t>& table) : table_(table) {}

  void local_apic(uint8_t processor_uid, uint8_t apic_id) {
    std::size_t at = begin(kMadtLocalApic, kLocalApicSize);
    put_u8(table_, at + 2, processor_uid);
    put_u8(table_, at + 3, apic_id);
    put_u32(table_, at + 4, kLocalApicEnabled);
  }
  void io_apic(uint8_t id, uint32_t address, uint32_t gsi_base) {
    std::size_t at = begin(kMadtIoApic, kIoApicSize);
    put_u8(table_, at + 2, id);
    put_u32(table_, at + 4, address);
    put_u32(table_, at + 8, gsi_base);
  }
  void source_override(uint8_t isa_irq, uint32_t gsi, uint16_t flags) {
    std::size_t at = begin(kMadtInterruptSourceOverride, kSourceOverrideSize);
    put_u8(table_, at + 2, kIsaBus);
    put_u8(table_, at + 3, isa_irq);
    put_u32(table_, at + 4, gsi);
    put_u16(table_, at + 8, flags);
  }
  void local_apic_nmi(uint8_t processor_uid, uint16_t flags, uint8_t lint) {
    std::size_t at = begin(kMadtLocalApicNmi, kLocalApicNmiSize);
    put_u8(table_, at + 2, processor_uid);
    put_u16(table_, at + 3, flags);
    put_u8(table_, at + 5, lint);
  }
  std::size_t end() const { return next_; }

 private:
  // Every structure starts with its type and length (ACPI 6.3 §5.2.12).
  std::size_t begin(uint8_t type, std::size_t length) {
    std::size_t at = next_;
    put_u8(table_, at, type);
    put_u8(table_, at + 1, static_cast<uint8_t>(length));
    next_ += length;
    return at;
  }

  std::vector<uint8_t>& table_;
  std::size_t next_ = kMadtFixedSize;
};

}  // namespace

std::size_t madt_size(uint32_t cpu_count) {
  return kMadtFixedSize + kLocalApicSize * cpu_count + kIoApicSize +
         kSourceOverrideSize * kSourceOverrideCount + kLocalApicNmiSize;
}

std::vector<uint8_t> make_madt(const AcpiPlatform& platform) {
  std::vector<uint8_t> madt = make_sdt("APIC", kMadtRevision, madt_size(platform.cpu_count));
  put_u32(madt, 36, platform.lapic_address);
  put_u32(madt, 40, kMadtPcAtCompat);

  MadtWriter writer(madt);
  for (uint32_t cpu = 0; cpu < platform.cpu_count; ++cpu) {
    writer.local_apic(static_cast<uint8_t>(cpu), static_cast<uint8_t>(cpu));
  }
  writer.io_apic(platform.ioapic_id, platform.ioapic_address, 0);
  writer.source_override(kPitIsaIrq, kPitGsi, kIntiConforming);
  // The SCI is level-triggered; active-high matches how the VMM drives the line.
  writer.source_override(static_cast<uint8_t>(platform.sci_irq), platform.sci_irq,
                         kIntiLevel | kIntiActiveHigh);
  writer.local_apic_nmi(kAllProcessors, kIntiEdge | kIntiActiveHigh, 1);
  if (writer.end() != madt.size())
    throw std::logic_error("MADT size does not match its structures");
  finish_sdt(madt);
  return madt;
}

}  // namespace keel::acpi
