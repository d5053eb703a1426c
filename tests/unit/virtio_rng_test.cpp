#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "devices/virtio/rng/virtio_rng_device.h"
#include "tests/support/fake_virtio_transport.h"
#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

using testing::FakeTransport;
using testing::VirtqueueDriver;

constexpr uint64_t kMiB = 1 << 20;

struct VirtioRngTest : ::testing::Test {
  GuestMemory memory{{{0, kMiB, 0}}};
  VirtqueueDriver driver{memory, 16};
  FakeTransport transport;
  boost::asio::io_context events;
  VirtioRngDevice device{events};

  VirtioRngTest() { device.attach(transport); }

  void activate() {
    std::vector<std::optional<SplitQueue>> queues;
    queues.emplace_back(std::in_place, memory, driver.config());
    device.activate(memory, std::move(queues), kFVersion1);
  }
  void kick() {
    std::lock_guard guard(transport.lock());
    device.queue_notify(0);
  }
  std::vector<uint8_t> bytes(uint64_t gpa, size_t n) {
    std::vector<uint8_t> out(n);
    memory.read(gpa, out);
    return out;
  }
};

TEST_F(VirtioRngTest, Identity) {
  EXPECT_EQ(device.device_type(), kDeviceTypeEntropy);
  EXPECT_EQ(device.num_queues(), 1);
  EXPECT_EQ(device.device_features(), 0u);
  EXPECT_EQ(device.config_size(), 0u);
}

TEST_F(VirtioRngTest, FillsWritableBuffersAndInterrupts) {
  activate();
  driver.make_available(driver.write_chain(0, {{0x10000, 64, true}}));
  driver.make_available(driver.write_chain(1, {{0x11000, 8, true}, {0x12000, 24, true}}));
  kick();

  ASSERT_EQ(driver.used_idx(), 2);
  EXPECT_EQ(driver.used_elem(0).id, 0u);
  EXPECT_EQ(driver.used_elem(0).len, 64u);
  EXPECT_EQ(driver.used_elem(1).id, 1u);
  EXPECT_EQ(driver.used_elem(1).len, 32u);
  EXPECT_EQ(transport.interrupts[0], 1);
  EXPECT_EQ(transport.needs_reset_calls, 0);
  EXPECT_EQ(device.bytes_given(), 96u);
  // 64 zero bytes from getrandom: probability 2^-512.
  auto first = bytes(0x10000, 64);
  EXPECT_TRUE(std::any_of(first.begin(), first.end(), [](uint8_t b) { return b != 0; }));
  // Nothing past the buffer was touched.
  auto after = bytes(0x10000 + 64, 64);
  EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(VirtioRngTest, BuffersPostedBeforeDriverOkAreFilled) {
  driver.make_available(driver.write_chain(0, {{0x10000, 16, true}}));
  activate();
  EXPECT_EQ(driver.used_idx(), 1);
}

TEST_F(VirtioRngTest, LargeRequestIsBounded) {
  activate();
  driver.make_available(driver.write_chain(0, {{0x20000, 100 * 1024, true}}));
  kick();
  ASSERT_EQ(driver.used_idx(), 1);
  EXPECT_EQ(driver.used_elem(0).len, VirtioRngDevice::kMaxBytesPerChain);
  auto past = bytes(0x20000 + VirtioRngDevice::kMaxBytesPerChain, 4096);
  EXPECT_TRUE(std::all_of(past.begin(), past.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(VirtioRngTest, NoInterruptWhenSuppressed) {
  activate();
  driver.set_avail_flags(kAvailFNoInterrupt);
  driver.make_available(driver.write_chain(0, {{0x10000, 16, true}}));
  kick();
  EXPECT_EQ(driver.used_idx(), 1);
  EXPECT_EQ(transport.interrupts[0], 0);
}

TEST_F(VirtioRngTest, ReadableBufferNeedsReset) {
  activate();
  driver.make_available(driver.write_chain(0, {{0x10000, 16, false}, {0x11000, 16, true}}));
  kick();
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_NE(device.last_error().find("device-readable"), std::string::npos);
  EXPECT_EQ(driver.used_idx(), 0);
  // The device stopped using the queue: later kicks do nothing.
  driver.make_available(driver.write_chain(2, {{0x12000, 16, true}}));
  kick();
  EXPECT_EQ(driver.used_idx(), 0);
  EXPECT_EQ(transport.needs_reset_calls, 1);
}

TEST_F(VirtioRngTest, BufferOutsideMemoryNeedsReset) {
  activate();
  driver.make_available(driver.write_chain(0, {{kMiB - 8, 16, true}}));
  kick();
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_EQ(driver.used_idx(), 0);
}

TEST_F(VirtioRngTest, ZeroLengthRequestNeedsReset) {
  activate();
  driver.make_available(driver.write_chain(0, {{0x10000, 0, true}}));
  kick();
  EXPECT_EQ(transport.needs_reset_calls, 1);
}

TEST_F(VirtioRngTest, ResetDropsTheQueue) {
  activate();
  device.reset();
  driver.make_available(driver.write_chain(0, {{0x10000, 16, true}}));
  kick();
  EXPECT_EQ(driver.used_idx(), 0);
  // And a new activation starts over.
  activate();
  EXPECT_EQ(driver.used_idx(), 1);
}

// A guest refilling the queue as fast as it is served cannot keep one kick
// going: a round takes kBurst chains, the rest follows on the event loop.
TEST_F(VirtioRngTest, OneKickTakesABoundedNumberOfChains) {
  activate();
  for (uint16_t i = 0; i < 16; ++i) {
    driver.make_available(driver.write_chain(i, {{0x10000 + i * 0x100u, 16, true}}));
  }
  // 16 more than one burst would take (the ring holds 16, so post the rest
  // after the first round).
  kick();
  EXPECT_EQ(driver.used_idx(), VirtioRngDevice::kBurst);
  for (uint16_t i = 0; i < 8; ++i) {
    driver.make_available(driver.write_chain(i, {{0x20000 + i * 0x100u, 16, true}}));
  }
  EXPECT_EQ(driver.used_idx(), VirtioRngDevice::kBurst) << "nothing more without the event loop";
  events.run();
  EXPECT_EQ(driver.used_idx(), VirtioRngDevice::kBurst + 8);
}

TEST_F(VirtioRngTest, ResetDropsTheRoundLeftForLater) {
  activate();
  for (uint16_t i = 0; i < 16; ++i) {
    driver.make_available(driver.write_chain(i, {{0x10000 + i * 0x100u, 16, true}}));
  }
  kick();
  {
    std::lock_guard guard(transport.lock());
    device.reset();
  }
  events.run();  // the posted round finds its queue gone
  EXPECT_EQ(driver.used_idx(), VirtioRngDevice::kBurst);
}

}  // namespace
}  // namespace keel::virtio
