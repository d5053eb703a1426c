#include "devices/pc/uart8250.h"

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace keel {
namespace {

struct UartFixture : ::testing::Test {
  std::string out;
  int irqs = 0;
  Uart8250 uart{[this](uint8_t b) { out.push_back(static_cast<char>(b)); }, [this] { ++irqs; }};
  uint8_t rd(uint16_t reg) {
    uint8_t v;
    uart.pio_read(reg, {&v, 1});
    return v;
  }
  void wr(uint16_t reg, uint8_t v) { uart.pio_write(reg, {&v, 1}); }
};

TEST_F(UartFixture, TransmitsBytesAndReportsEmpty) {
  for (char c : std::string("hi\n")) wr(0, static_cast<uint8_t>(c));
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(rd(5) & 0x60, 0x60);
  EXPECT_EQ(irqs, 0) << "no interrupt while IER is 0";
}

TEST_F(UartFixture, DivisorLatchDoesNotTransmit) {
  wr(3, 0x80);
  wr(0, 0x01);
  wr(1, 0x00);
  EXPECT_EQ(rd(0), 0x01);
  wr(3, 0x03);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(rd(3), 0x03);
}

TEST_F(UartFixture, ThreInterruptOnEnableAndAfterEachByte) {
  wr(1, 0x02);
  EXPECT_EQ(irqs, 1);
  EXPECT_EQ(rd(2) & 0x0f, 0x02);
  EXPECT_EQ(rd(2) & 0x0f, 0x01) << "reading IIR acknowledged THRE";
  wr(0, 'x');
  EXPECT_EQ(irqs, 2);
}

TEST_F(UartFixture, Out2GatesTheInterruptLine) {
  wr(4, 0x00);  // OUT2 off
  wr(1, 0x02);
  EXPECT_EQ(irqs, 0);
  EXPECT_EQ(rd(2) & 0x0f, 0x02) << "pending all the same";
  wr(4, 0x08);
  wr(0, 'x');
  EXPECT_EQ(irqs, 1);
}

TEST_F(UartFixture, ReceivesQueuedInputWithInterrupt) {
  wr(1, 0x01);
  const uint8_t in[] = {'a', 'b'};
  uart.queue_input(in);
  EXPECT_EQ(irqs, 1);
  EXPECT_EQ(rd(2) & 0x0f, 0x04);
  EXPECT_EQ(rd(5) & 1, 1);
  EXPECT_EQ(rd(0), 'a');
  EXPECT_EQ(rd(0), 'b');
  EXPECT_EQ(rd(5) & 1, 0);
  EXPECT_EQ(rd(2) & 0x0f, 0x01);
}

TEST_F(UartFixture, LoopbackEchoesIntoReceiver) {
  wr(4, 0x10);
  wr(0, 'z');
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(rd(0), 'z');
  wr(4, 0x1f);
  EXPECT_EQ(rd(6) & 0xf0, 0xf0);
}

TEST_F(UartFixture, LoopbackFloodIsBoundedByTheFifo) {
  wr(4, 0x10);
  for (int i = 0; i < 100000; ++i) wr(0, static_cast<uint8_t>(i));
  EXPECT_EQ(rd(5) & 0x03, 0x03) << "data ready and overrun";
  EXPECT_EQ(rd(5) & 0x02, 0) << "reading LSR clears the overrun";
  for (size_t i = 0; i < Uart8250::kFifoSize; ++i) EXPECT_EQ(rd(0), static_cast<uint8_t>(i));
  EXPECT_EQ(rd(5) & 1, 0);
}

TEST_F(UartFixture, IgnoresWideAccesses) {
  uint8_t word[2] = {'a', 'b'};
  uart.pio_write(0, word);
  EXPECT_TRUE(out.empty());
}

TEST_F(UartFixture, InputOfferedOnlyAsFarAsTheFifoHasRoom) {
  int room = 0;
  uart.set_room_hook([&] { ++room; });
  std::string text(40, 'x');
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  EXPECT_EQ(uart.offer_input(bytes), 0u) << "RTS low: the guest's driver is not ready";
  wr(4, 0x0b);  // DTR, RTS, OUT2
  EXPECT_EQ(room, 1) << "RTS up: room";
  room = 0;
  EXPECT_EQ(uart.offer_input(bytes), Uart8250::kFifoSize);
  EXPECT_EQ(uart.offer_input(bytes), 0u) << "full: nothing taken, nothing dropped";
  EXPECT_EQ(rd(5) & 0x02, 0) << "no overrun";
  for (size_t i = 0; i + 1 < Uart8250::kFifoSize; ++i) rd(0);
  EXPECT_EQ(room, 0) << "told only once the FIFO is empty";
  rd(0);
  EXPECT_EQ(room, 1);
  EXPECT_EQ(rd(5) & 0x01, 0);
  wr(4, 0x09);  // RTS down (a full tty with crtscts): stop
  EXPECT_EQ(uart.offer_input(bytes), 0u);
  wr(4, 0x0b);
  EXPECT_EQ(room, 2);
  EXPECT_EQ(uart.offer_input(bytes), Uart8250::kFifoSize);
}

TEST_F(UartFixture, BreakIsANulWithLineStatusAtTheHead) {
  wr(4, 0x0b);
  wr(1, 0x05);  // received data and line status interrupts
  const uint8_t a = 'a';
  uart.offer_input({&a, 1});
  EXPECT_EQ(irqs, 1);
  EXPECT_TRUE(uart.offer_break());
  EXPECT_EQ(rd(2) & 0x0f, 0x04) << "the break is not at the head yet";
  EXPECT_EQ(rd(5) & 0x11, 0x01);
  EXPECT_EQ(rd(0), 'a');
  EXPECT_EQ(rd(2) & 0x0f, 0x06) << "line status first";
  EXPECT_EQ(rd(5) & 0x11, 0x11) << "BI with the NUL";
  EXPECT_EQ(rd(2) & 0x0f, 0x04) << "reading LSR cleared BI";
  EXPECT_EQ(rd(0), 0);
  EXPECT_EQ(rd(2) & 0x0f, 0x01);
}

TEST_F(UartFixture, BreakSurvivesSaveAndRestore) {
  wr(4, 0x0b);
  EXPECT_TRUE(uart.offer_break());
  Uart8250 copy([](uint8_t) {}, [] {});
  copy.restore(uart.save());
  uint8_t lsr = 0;
  copy.pio_read(5, {&lsr, 1});
  EXPECT_EQ(lsr & 0x11, 0x11);
  auto state = uart.save();
  state.set_rx_break(2);  // marks a byte the FIFO does not hold
  EXPECT_THROW(copy.restore(state), InputError);
}

}  // namespace
}  // namespace keel
