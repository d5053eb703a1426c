// HA output commit's store (devices/virtio/net/held_output.h): frames kept
// in order per epoch, released up to an acknowledged epoch, bounded.
#include "devices/virtio/net/held_output.h"

#include <gtest/gtest.h>

#include <string>

namespace keel::virtio {
namespace {

void add(HeldOutput& held, const std::string& text) {
  iovec parts[2] = {{const_cast<char*>(text.data()), 2},
                    {const_cast<char*>(text.data()) + 2, text.size() - 2}};
  held.add(parts, text.size());
}

struct Wire {
  std::vector<std::string> sent;
  bool full = false;
  std::function<bool(std::span<const uint8_t>)> sender() {
    return [this](std::span<const uint8_t> frame) {
      if (full) return false;
      sent.emplace_back(frame.begin(), frame.end());
      return true;
    };
  }
};

TEST(HeldOutput, FramesLeaveInOrderOnlyUpToTheReleasedEpoch) {
  HeldOutput held(1 << 20);
  Wire wire;
  add(held, "a1");
  add(held, "a2");
  held.close_epoch(1);
  add(held, "b1");
  EXPECT_EQ(held.release(0, wire.sender()), 0u);
  EXPECT_EQ(held.release(1, wire.sender()), 2u);
  EXPECT_EQ(wire.sent, (std::vector<std::string>{"a1", "a2"}));
  held.close_epoch(2);
  add(held, "c1");
  wire.full = true;  // the host takes nothing now: kept, in order
  EXPECT_EQ(held.release(2, wire.sender()), 0u);
  EXPECT_EQ(held.frames(), 2u);
  wire.full = false;
  EXPECT_EQ(held.release(0, wire.sender()), 1u) << "a release is not taken back";
  EXPECT_EQ(wire.sent.back(), "b1");
  EXPECT_EQ(held.release_all(wire.sender()), 1u);
  EXPECT_EQ(wire.sent.back(), "c1");
  EXPECT_EQ(held.bytes(), 0u);
}

TEST(HeldOutput, IsBoundedButAlwaysTakesOneFrame) {
  HeldOutput held(10);
  EXPECT_TRUE(held.has_room(100));
  add(held, std::string(8, 'x'));
  EXPECT_TRUE(held.has_room(2));
  EXPECT_FALSE(held.has_room(3));
  EXPECT_EQ(held.bytes(), 8u);
  held.clear();
  EXPECT_EQ(held.frames(), 0u);
}

}  // namespace
}  // namespace keel::virtio
