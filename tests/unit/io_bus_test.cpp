#include "devices/pc/io_bus.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace keel {
namespace {

struct Recorder : PioDevice {
  std::vector<std::pair<uint16_t, uint8_t>> writes;
  void pio_read(uint16_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override {
    writes.emplace_back(offset, data[0]);
  }
};

TEST(IoBus, RoutesByRangeWithOffsets) {
  IoBus bus;
  Recorder a, b;
  bus.add(0x3f8, 8, a);
  bus.add(0x600, 8, b);
  uint8_t byte = 0x41;
  EXPECT_TRUE(bus.write(0x3fd, {&byte, 1}));
  EXPECT_TRUE(bus.write(0x604, {&byte, 1}));
  ASSERT_EQ(a.writes.size(), 1u);
  EXPECT_EQ(a.writes[0].first, 5);
  ASSERT_EQ(b.writes.size(), 1u);
  EXPECT_EQ(b.writes[0].first, 4);
  uint8_t word[2];
  EXPECT_TRUE(bus.read(0x602, word));
  EXPECT_EQ(word[0], 2);
}

TEST(IoBus, OneDeviceAtTwoRangesSeesItsOwnOffsets) {
  IoBus bus;
  Recorder kbd;
  bus.add(0x60, 1, kbd);
  bus.add(0x64, 1, kbd, 4);
  uint8_t byte = 0xfe;
  EXPECT_TRUE(bus.write(0x64, {&byte, 1}));
  EXPECT_TRUE(bus.write(0x60, {&byte, 1}));
  ASSERT_EQ(kbd.writes.size(), 2u);
  EXPECT_EQ(kbd.writes[0].first, 4);
  EXPECT_EQ(kbd.writes[1].first, 0);
}

TEST(IoBus, UnclaimedPortsReadAllOnes) {
  IoBus bus;
  uint8_t data[4] = {};
  EXPECT_FALSE(bus.read(0x80, data));
  EXPECT_EQ(data[3], 0xff);
  EXPECT_FALSE(bus.write(0x80, data));
}

TEST(IoBus, AccessStraddlingTheEndIsUnclaimed) {
  IoBus bus;
  Recorder a;
  bus.add(0x3f8, 8, a);
  uint8_t data[4] = {};
  EXPECT_FALSE(bus.read(0x3fe, data));
}

TEST(IoBus, RefusesOverlapsAndBadRanges) {
  IoBus bus;
  Recorder a;
  bus.add(0x60, 1, a);
  EXPECT_THROW(bus.add(0x5f, 2, a), std::invalid_argument);
  EXPECT_THROW(bus.add(0xfff0, 0x20, a), std::invalid_argument);
  EXPECT_THROW(bus.add(0x100, 0, a), std::invalid_argument);
}

// The VMM's own calls into a device hold the lock a vCPU's access takes: a
// port write started during the task lands only after it.
TEST(IoBus, RunsTasksUnderTheDevicesLock) {
  struct Logged : PioDevice {
    std::vector<std::string>* log = nullptr;
    void pio_read(uint16_t, std::span<uint8_t>) override {}
    void pio_write(uint16_t, std::span<const uint8_t>) override { log->push_back("write"); }
  } device;
  std::vector<std::string> log;
  device.log = &log;
  IoBus bus;
  bus.add(0x3f8, 8, device);
  std::thread vcpu;
  bus.with_device_locked(device, [&] {
    vcpu = std::thread([&] {
      uint8_t byte = 1;
      bus.write(0x3f8, {&byte, 1});
    });
    log.push_back("task");
  });
  vcpu.join();
  EXPECT_EQ(log, (std::vector<std::string>{"task", "write"}));
  Recorder stranger;
  EXPECT_THROW(bus.with_device_locked(stranger, [] {}), std::invalid_argument);
}

}  // namespace
}  // namespace keel
