// Snapshot of the platform devices (proto/device_state.proto): each device's
// save -> restore into a fresh one -> save gives the same state, the restored
// device behaves as the original, and corrupted states are refused by name.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "devices/pc/acpi_pm.h"
#include "devices/pc/cmos_rtc.h"
#include "devices/pc/i8042.h"
#include "devices/pc/pvpanic.h"
#include "devices/pc/uart8250.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/pci_config_space.h"
#include "devices/pci/pci_host_bridge.h"
#include "devices/virtio/pci/msix_table.h"

namespace keel {
namespace {

namespace pb = state::v1;

template <typename Msg>
bool same(const Msg& a, const Msg& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

// Runs `f`, expecting an InputError whose message names `what`.
template <typename F>
void expect_refused(F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "not refused: " << what;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

uint8_t rd(PioDevice& d, uint16_t reg) {
  uint8_t v = 0;
  d.pio_read(reg, {&v, 1});
  return v;
}
void wr(PioDevice& d, uint16_t reg, uint8_t v) {
  d.pio_write(reg, {&v, 1});
}

// --- UART ------------------------------------------------------------------

TEST(UartState, RoundTripAndTheFifoReadsOnAfterRestore) {
  std::string out;
  Uart8250 a([&](uint8_t b) { out.push_back(static_cast<char>(b)); }, [] {});
  wr(a, 3, 0x80);  // DLAB: divisor 0x0102
  wr(a, 0, 0x02);
  wr(a, 1, 0x01);
  wr(a, 3, 0x1b);  // 8E1
  wr(a, 4, 0x0b);
  wr(a, 7, 0x5a);
  wr(a, 1, 0x03);  // RX and THRE interrupts
  const std::string input = "hello, world";
  a.queue_input({reinterpret_cast<const uint8_t*>(input.data()), input.size()});
  EXPECT_EQ(rd(a, 0), 'h');

  const pb::UartState saved = a.save();
  EXPECT_EQ(saved.rx_fifo(), "ello, world");
  int irqs = 0;
  Uart8250 b([](uint8_t) {}, [&] { ++irqs; });
  b.restore(saved);
  EXPECT_TRUE(same(b.save(), saved));
  EXPECT_EQ(irqs, 0) << "restore raises no edge";
  EXPECT_EQ(rd(b, 3), 0x1b);
  EXPECT_EQ(rd(b, 4), 0x0b);
  EXPECT_EQ(rd(b, 7), 0x5a);
  EXPECT_EQ(rd(b, 1), 0x03);
  std::string rest;
  while (rd(b, 5) & 1) rest.push_back(static_cast<char>(rd(b, 0)));
  EXPECT_EQ(rest, "ello, world");
  wr(b, 3, 0x9b);
  EXPECT_EQ(rd(b, 0), 0x02);
  EXPECT_EQ(rd(b, 1), 0x01);
}

TEST(UartState, RefusesCorruption) {
  Uart8250 u([](uint8_t) {}, [] {});
  pb::UartState s = u.save();
  s.set_rx_fifo(std::string(17, 'x'));
  expect_refused([&] { u.restore(s); }, "rx_fifo");
  s = u.save();
  s.set_ier(0x10);
  expect_refused([&] { u.restore(s); }, "ier");
  s = u.save();
  s.set_mcr(0x20);
  expect_refused([&] { u.restore(s); }, "mcr");
  s = u.save();
  s.set_lcr(0x100);
  expect_refused([&] { u.restore(s); }, "lcr");
  EXPECT_TRUE(same(u.save(), Uart8250([](uint8_t) {}, [] {}).save()))
      << "a refusal changes nothing";
}

// --- i8042 -----------------------------------------------------------------

TEST(I8042State, RoundTripKeepsAPendingCommand) {
  int resets = 0;
  I8042 a([&] { ++resets; });
  wr(a, 4, 0xad);  // disable keyboard: config bit 4
  wr(a, 4, 0x20);  // read config: output full
  wr(a, 4, 0xd1);  // write output port: waits for data
  const pb::I8042State saved = a.save();
  EXPECT_TRUE(saved.has_pending_command());
  I8042 b([&] { ++resets; });
  b.restore(saved);
  EXPECT_TRUE(same(b.save(), saved));
  EXPECT_EQ(rd(b, 4) & 0x09, 0x09);  // output full, last was a command
  wr(b, 0, 0x00);                    // the pending 0xd1 takes it: bit 0 low resets
  EXPECT_EQ(resets, 1);
}

TEST(I8042State, RefusesCorruption) {
  I8042 d(nullptr);
  pb::I8042State s = d.save();
  s.set_has_pending_command(true);
  s.set_pending_command(0xfe);
  expect_refused([&] { d.restore(s); }, "pending_command");
  s = d.save();
  s.set_config(0x1ff);
  expect_refused([&] { d.restore(s); }, "config");
  s = d.save();
  s.set_output(0x55);
  expect_refused([&] { d.restore(s); }, "output");
}

// --- ACPI PM ---------------------------------------------------------------

TEST(AcpiPmState, RoundTripReraisesTheSci) {
  std::vector<bool> sci_a, sci_b;
  AcpiPm a(5, nullptr, [&](bool l) { sci_a.push_back(l); });
  const uint8_t enable[2] = {0x00, 0x01};  // PWRBTN_EN
  a.pio_write(2, enable);
  a.press_power_button();
  ASSERT_EQ(sci_a, std::vector<bool>{true});
  const pb::AcpiPmState saved = a.save();
  EXPECT_TRUE(saved.sci_level());

  int powered_off = 0;
  AcpiPm b(
      5, [&] { ++powered_off; }, [&](bool l) { sci_b.push_back(l); });
  b.restore(saved);
  EXPECT_EQ(sci_b, std::vector<bool>{true}) << "the level is raised again";
  EXPECT_TRUE(same(b.save(), saved));
  const uint8_t clear[2] = {0x00, 0x01};
  b.pio_write(0, clear);  // the OS acknowledges the press
  EXPECT_EQ(sci_b, (std::vector<bool>{true, false}));
  const uint8_t s5[2] = {0x00, static_cast<uint8_t>((5 << 2) | 0x20)};
  b.pio_write(4, s5);
  EXPECT_EQ(powered_off, 1);
}

TEST(AcpiPmState, RefusesCorruption) {
  AcpiPm d(5, nullptr);
  pb::AcpiPmState s = d.save();
  s.set_status(0x0001);
  expect_refused([&] { d.restore(s); }, "status");
  s = d.save();
  s.set_control(0);
  expect_refused([&] { d.restore(s); }, "control");
  s = d.save();
  s.set_control(1 | (1 << 13));
  expect_refused([&] { d.restore(s); }, "control");
  s = d.save();
  s.set_sci_level(true);
  expect_refused([&] { d.restore(s); }, "sci_level");
  s = d.save();
  s.set_enable(0x10000);
  expect_refused([&] { d.restore(s); }, "enable");
}

// --- CMOS RTC --------------------------------------------------------------

TEST(CmosRtcState, RoundTripKeepsRamAndTheGuestsClockOffset) {
  std::time_t host = 1'700'000'000;  // 2023-11-14 22:13:20 UTC
  CmosRtc a([&] { return host; });
  wr(a, 0, 0x40);
  wr(a, 1, 0xa5);  // plain CMOS memory
  // The guest sets 2001-02-03 04:05:06 (BCD, 24h).
  wr(a, 0, 0x0b);
  wr(a, 1, 0x82);
  const std::pair<uint8_t, uint8_t> fields[] = {{0x00, 0x06}, {0x02, 0x05}, {0x04, 0x04},
                                                {0x07, 0x03}, {0x08, 0x02}, {0x09, 0x01},
                                                {0x32, 0x20}};
  for (auto [index, value] : fields) {
    wr(a, 0, index);
    wr(a, 1, value);
  }
  wr(a, 0, 0x0b);
  wr(a, 1, 0x02);
  wr(a, 0, 0x0e);  // the index stays where the guest left it
  const pb::CmosRtcState saved = a.save();

  host += 60;  // the restore happens a minute later on another host
  CmosRtc b([&] { return host; });
  b.restore(saved);
  EXPECT_TRUE(same(b.save(), saved));
  EXPECT_EQ(rd(b, 0), 0x0e);
  wr(b, 0, 0x40);
  EXPECT_EQ(rd(b, 1), 0xa5);
  wr(b, 0, 0x02);
  EXPECT_EQ(rd(b, 1), 0x06) << "the guest's clock went on with the host's: 04:06:06";
  wr(b, 0, 0x09);
  EXPECT_EQ(rd(b, 1), 0x01);
}

TEST(CmosRtcState, RefusesCorruption) {
  CmosRtc d;
  pb::CmosRtcState s = d.save();
  s.set_ram(std::string(127, '\0'));
  expect_refused([&] { d.restore(s); }, "ram");
  s = d.save();
  s.set_index(128);
  expect_refused([&] { d.restore(s); }, "index");
  s = d.save();
  s.set_offset_seconds(INT64_MAX);
  expect_refused([&] { d.restore(s); }, "offset_seconds");
  s = d.save();
  s.set_pending_mon(-5);
  expect_refused([&] { d.restore(s); }, "pending_mon");
  s = d.save();
  std::string ram = s.ram();
  ram[0x0a] = static_cast<char>(0xa6);
  s.set_ram(ram);
  expect_refused([&] { d.restore(s); }, "UIP");
}

TEST(PvPanicState, RoundTrip) {
  PvPanic a(nullptr), b(nullptr);
  b.restore(a.save());
  EXPECT_TRUE(same(a.save(), b.save()));
}

// --- PCI -------------------------------------------------------------------

TEST(PciBusState, RoundTripSelectsTheSameRegister) {
  PciBus a, b;
  PciHostBridge bridge;
  b.add(0, bridge);
  const uint8_t address[4] = {0x00, 0x00, 0x00, 0x80};  // bus 0, slot 0, reg 0
  a.pio_write(0, address);
  b.restore(a.save());
  EXPECT_TRUE(same(b.save(), a.save()));
  uint8_t id[4];
  b.pio_read(4, id);
  EXPECT_EQ(id[0] | id[1] << 8, 0x1b36);
  pb::PciBusState s;
  s.set_address(0x80000001);
  expect_refused([&] { b.restore(s); }, "address");
  s.set_address(0x01000000);
  expect_refused([&] { b.restore(s); }, "address");
}

TEST(PciConfigState, TakesOnlyWritableBitsAndRefusesReadOnlyChanges) {
  PciConfigSpace a(0x1af4, 0x1041, 0x020000, 1);
  a.set_u32(0x10, 0x4, 0xffffc000);  // a BAR with fixed low bits
  PciConfigSpace b = a;
  a.write_dword(0x04, 0x0406, 0xf);  // command: memory, bus master, INTx disable
  a.write_dword(0x10, 0xfebf0000, 0xf);
  b.restore(a.save(), "test function");
  EXPECT_TRUE(same(b.save(), a.save()));
  EXPECT_EQ(b.read_dword(0x04), 0x0406u);
  EXPECT_EQ(b.read_dword(0x10), 0xfebf0004u);

  pb::PciConfigState s = a.save();
  std::string bytes = s.bytes();
  bytes[0x02] = 0x42;  // device ID
  s.set_bytes(bytes);
  expect_refused([&] { b.restore(s, "test function"); }, "byte 0x2");
  bytes = a.save().bytes();
  bytes[0x10] = 0x05;  // BAR type bits
  s.set_bytes(bytes);
  expect_refused([&] { b.restore(s, "test function"); }, "test function");
  s.set_bytes(std::string(255, '\0'));
  expect_refused([&] { b.restore(s, "test function"); }, "256");
  EXPECT_EQ(b.read_dword(0x10), 0xfebf0004u) << "a refusal changes nothing";
}

TEST(PciHostBridgeState, RoundTrip) {
  PciHostBridge a, b;
  a.config_write(0x04, 0x0007, 0x3);
  b.restore(a.save());
  EXPECT_EQ(b.config_read(0x04) & 0xffff, 0x0007u);
}

// --- MSI-X -----------------------------------------------------------------

struct Sink : virtio::MsiSink {
  void send(uint16_t vector, uint64_t address, uint32_t data) override {
    sent.push_back({vector, address, data});
  }
  struct Message {
    uint16_t vector;
    uint64_t address;
    uint32_t data;
  };
  std::vector<Message> sent;
};

void program(virtio::MsixTable& t, uint16_t v, uint64_t address, uint32_t data, bool masked) {
  uint8_t bytes[8];
  std::memcpy(bytes, &address, 8);
  t.table_write(16ull * v, {bytes, 8});
  std::memcpy(bytes, &data, 4);
  t.table_write(16ull * v + 8, {bytes, 4});
  const uint32_t control = masked ? 1 : 0;
  std::memcpy(bytes, &control, 4);
  t.table_write(16ull * v + 12, {bytes, 4});
}

TEST(MsixState, RoundTripKeepsPendingVectorsUntilUnmasked) {
  Sink sink_a, sink_b;
  virtio::MsixTable a(70, sink_a), b(70, sink_b);
  program(a, 0, 0xfee00000, 0x41, false);
  program(a, 65, 0xfee01000, 0x42, true);
  a.set_control(true, false);
  a.trigger(65);  // masked: pending
  EXPECT_TRUE(a.pending(65));
  const pb::MsixState saved = a.save();
  b.restore(saved, "test");
  EXPECT_TRUE(same(b.save(), saved));
  EXPECT_TRUE(sink_b.sent.empty()) << "restore sends nothing";
  b.trigger(0);
  ASSERT_EQ(sink_b.sent.size(), 1u);
  EXPECT_EQ(sink_b.sent[0].address, 0xfee00000u);
  program(b, 65, 0xfee01000, 0x42, false);  // unmasking delivers the pending one
  ASSERT_EQ(sink_b.sent.size(), 2u);
  EXPECT_EQ(sink_b.sent[1].vector, 65);
  EXPECT_EQ(sink_b.sent[1].data, 0x42u);
}

TEST(MsixState, RefusesCorruption) {
  Sink sink;
  virtio::MsixTable t(3, sink);
  pb::MsixState s = t.save();
  s.add_entries();
  expect_refused([&] { t.restore(s, "fn"); }, "entries");
  s = t.save();
  s.mutable_entries(1)->set_address_lo(0xfee00002);
  expect_refused([&] { t.restore(s, "fn"); }, "entry 1");
  s = t.save();
  s.mutable_entries(2)->set_control(2);
  expect_refused([&] { t.restore(s, "fn"); }, "entry 2");
  s = t.save();
  s.set_pba(0, 0x8);  // vector 3 does not exist
  expect_refused([&] { t.restore(s, "fn"); }, "PBA");
  s = t.save();
  s.add_pba(0);
  expect_refused([&] { t.restore(s, "fn"); }, "PBA");
  s = t.save();
  s.set_enabled(true);
  s.mutable_entries(0)->set_control(0);
  s.set_pba(0, 1);  // pending, enabled, unmasked: it would have been sent
  expect_refused([&] { t.restore(s, "fn"); }, "entry 0");
}

}  // namespace
}  // namespace keel
