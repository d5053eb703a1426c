#include "vmm/kvm/coalesced_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstring>
#include <vector>

#include "vmm/coalesced_io_poller.h"

namespace keel {
namespace {

struct Recorder : PioDevice {
  std::vector<std::pair<uint16_t, uint32_t>> writes;
  void pio_read(uint16_t, std::span<uint8_t>) override {}
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override {
    uint32_t v = 0;
    std::memcpy(&v, data.data(), data.size());
    writes.emplace_back(offset, v);
  }
};

// A ring page laid out as KVM writes it: first, last, then 24-byte entries.
struct FakeRing {
  std::vector<uint8_t> page = std::vector<uint8_t>(static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  void put(uint32_t index, uint64_t port, uint32_t len, uint32_t value, uint32_t pio = 1) {
    uint8_t* e = page.data() + 8 + index * 24;
    std::memcpy(e, &port, 8);
    std::memcpy(e + 8, &len, 4);
    std::memcpy(e + 12, &pio, 4);
    std::memcpy(e + 16, &value, 4);
  }
  void set(uint32_t first, uint32_t last) {
    std::memcpy(page.data(), &first, 4);
    std::memcpy(page.data() + 4, &last, 4);
  }
  uint32_t first() const {
    uint32_t f;
    std::memcpy(&f, page.data(), 4);
    return f;
  }
};

TEST(CoalescedIo, AppliesQueuedWritesInOrderAndConsumesThem) {
  FakeRing ring;
  IoBus bus;
  Recorder dev;
  bus.add(0xcf8, 8, dev);
  ring.put(0, 0xcf8, 4, 0x80000000);
  ring.put(1, 0xcf8, 4, 0x80000800);
  ring.set(0, 2);
  kvm::CoalescedIo io(ring.page.data(), 0);
  EXPECT_EQ(io.drain(bus), 2u);
  ASSERT_EQ(dev.writes.size(), 2u);
  EXPECT_EQ(dev.writes[0].second, 0x80000000u);
  EXPECT_EQ(dev.writes[1].second, 0x80000800u);
  EXPECT_EQ(ring.first(), 2u);
  EXPECT_EQ(io.drain(bus), 0u);
  EXPECT_EQ(dev.writes.size(), 2u) << "nothing twice";
}

TEST(CoalescedIo, WrapsAroundTheRingAndSkipsBadEntries) {
  FakeRing ring;
  IoBus bus;
  Recorder dev;
  bus.add(0xcf8, 8, dev);
  uint32_t capacity = static_cast<uint32_t>((ring.page.size() - 8) / 24);
  ring.put(capacity - 1, 0xcf8, 4, 1);
  ring.put(0, 0xcf8, 9, 2);             // length out of range: skipped
  ring.put(1, 0x1cf8, 4, 3);            // not a port: skipped
  ring.put(2, 0xcf8, 4, 4, /*pio=*/0);  // MMIO: not ours
  ring.put(3, 0xcf8, 4, 5);
  ring.set(capacity - 1, 4);
  kvm::CoalescedIo io(ring.page.data(), 0);
  io.drain(bus);
  ASSERT_EQ(dev.writes.size(), 2u);
  EXPECT_EQ(dev.writes[0].second, 1u);
  EXPECT_EQ(dev.writes[1].second, 5u);
  EXPECT_EQ(ring.first(), 4u);
}

TEST(CoalescedIo, StopsAtAnIndexOutsideTheRing) {
  FakeRing ring;
  IoBus bus;
  Recorder dev;
  bus.add(0xcf8, 8, dev);
  ring.set(100000, 3);
  kvm::CoalescedIo io(ring.page.data(), 0);
  io.drain(bus);
  EXPECT_TRUE(dev.writes.empty());
  ring.put(0, 0xcf8, 4, 7);
  ring.set(0, 100000);  // `last` outside the ring: must not spin forever
  io.drain(bus);
  EXPECT_TRUE(dev.writes.empty());
}

// A guest that queued writes and then made no exit: the poller applies them
// from the event loop, and keeps looking (a write queued later arrives too).
TEST(CoalescedIoPoller, AppliesWritesNoExitWouldApply) {
  FakeRing ring;
  IoBus bus;
  Recorder dev;
  bus.add(0x3f8, 1, dev);
  kvm::CoalescedIo io(ring.page.data(), 0);
  boost::asio::io_context events;
  CoalescedIoPoller poller(events, io, bus, [](const std::exception& e) { FAIL() << e.what(); });
  poller.start();
  ring.put(0, 0x3f8, 1, 'k');
  ring.set(0, 1);
  for (int i = 0; i < 1000 && dev.writes.empty(); ++i) events.run_one();
  ASSERT_EQ(dev.writes.size(), 1u);
  EXPECT_EQ(dev.writes[0].second, uint32_t{'k'});
  ring.put(1, 0x3f8, 1, '\n');
  ring.set(1, 2);
  for (int i = 0; i < 1000 && dev.writes.size() < 2; ++i) events.run_one();
  ASSERT_EQ(dev.writes.size(), 2u);
  EXPECT_EQ(dev.writes[1].second, uint32_t{'\n'});
  poller.stop();
  events.run();  // the cancelled wait ends; nothing is re-armed
  EXPECT_EQ(ring.first(), 2u);
}

}  // namespace
}  // namespace keel
