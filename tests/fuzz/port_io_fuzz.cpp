// libFuzzer target: the PC platform's port-I/O devices as a guest reaches
// them, through the I/O bus keel-vmm wires: COM1 (8250 UART), the i8042,
// ACPI PM1, the CMOS RTC, pvpanic and PCI configuration (0xCF8/0xCFC) with
// the host bridge, driven by a random sequence of accesses. Nothing may
// crash; after each access every device still saves a state that a fresh
// device accepts (the transport-level invariant the snapshot relies on).
//
// Input: records of u8 op | u16 port | u8 width | u32 value, where op bit 0
// is write, bit 1 queues the value's low byte as UART input first.
#include <cstddef>
#include <cstdint>
#include <span>

#include "devices/pc/acpi_pm.h"
#include "devices/pc/cmos_rtc.h"
#include "devices/pc/i8042.h"
#include "devices/pc/io_bus.h"
#include "devices/pc/pvpanic.h"
#include "devices/pc/uart8250.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/pci_host_bridge.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/boot/memory_layout.h"

using namespace keel;

namespace {

constexpr uint16_t kCom1 = 0x3f8;
constexpr uint16_t kPm1a = layout::kPm1aEvtPort;
constexpr unsigned kMaxAccesses = 2000;

template <typename Device>
void check_round_trip(Device& device, Device& fresh) {
  fresh.restore(device.save());  // throws on a state the device should not have made
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t console_bytes = 0, irqs = 0, resets = 0, power_offs = 0, panics = 0;
  Uart8250 uart([&](uint8_t) { ++console_bytes; }, [&] { ++irqs; });
  I8042 i8042([&] { ++resets; });
  AcpiPm pm(
      5, [&] { ++power_offs; }, [&](bool) { ++irqs; });
  PvPanic pvpanic([&](uint8_t) { ++panics; });
  CmosRtc rtc([] { return static_cast<std::time_t>(1700000000); });
  PciHostBridge bridge;
  PciBus pci;
  pci.add(0, bridge);
  IoBus bus;
  bus.add(kCom1, 8, uart);
  bus.add(I8042::kDataPort, 1, i8042);
  bus.add(I8042::kCommandPort, 1, i8042, 4);
  bus.add(kPm1a, AcpiPm::kPortCount, pm);
  bus.add(PvPanic::kPort, 1, pvpanic);
  bus.add(CmosRtc::kPort, CmosRtc::kPortCount, rtc);
  bus.add(PciBus::kConfigPort, PciBus::kConfigPortCount, pci);

  Uart8250 uart2([](uint8_t) {}, [] {});
  I8042 i8042_2([] {});
  AcpiPm pm2(5, [] {});
  PvPanic pvpanic2([](uint8_t) {});
  CmosRtc rtc2([] { return static_cast<std::time_t>(1700000000); });
  PciHostBridge bridge2;
  PciBus pci2;
  pci2.add(0, bridge2);

  for (unsigned n = 0; size >= 8 && n < kMaxAccesses; ++n) {
    const auto op = fuzz::take<uint8_t>(data, size);
    const auto port = fuzz::take<uint16_t>(data, size);
    const unsigned width = 1u << (fuzz::take<uint8_t>(data, size) % 3);  // 1, 2, 4
    const auto value = fuzz::take<uint32_t>(data, size);
    if (op & 2) {
      const uint8_t byte = static_cast<uint8_t>(value);
      uart.queue_input(std::span<const uint8_t>(&byte, 1));
    }
    uint8_t bytes[4] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                        static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
    if (op & 1) {
      bus.write(port, std::span<const uint8_t>(bytes, width));
    } else {
      bus.read(port, std::span<uint8_t>(bytes, width));
    }
    check_round_trip(uart, uart2);
    check_round_trip(i8042, i8042_2);
    check_round_trip(pm, pm2);
    check_round_trip(pvpanic, pvpanic2);
    check_round_trip(rtc, rtc2);
    pci2.restore(pci.save());
    bridge2.restore(bridge.save());
  }
  return 0;
}
