#include "devices/pc/uart8250.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace keel
