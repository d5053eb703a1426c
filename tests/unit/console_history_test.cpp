#include "vmm/console/console_history.h"

#include <gtest/gtest.h>

#include <string>

namespace keel {
namespace {

std::span<const uint8_t> bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

TEST(ConsoleHistory, KeepsTheNewestBytesByOffset) {
  ConsoleHistory history(8);
  history.append(bytes("hello "));
  EXPECT_EQ(history.start(), 0u);
  EXPECT_EQ(history.end(), 6u);
  history.append(bytes("world"));
  EXPECT_EQ(history.start(), 3u);
  EXPECT_EQ(history.end(), 11u);
  EXPECT_EQ(history.contents(), "lo world");
  std::string out;
  EXPECT_EQ(history.read(5, 3, out), 5u);
  EXPECT_EQ(out, " wo");
  out.clear();
  EXPECT_EQ(history.read(0, 100, out), 3u) << "a forgotten offset reads from the oldest kept";
  EXPECT_EQ(out, "lo world");
  out.clear();
  EXPECT_EQ(history.read(11, 100, out), 11u);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(history.read(50, 100, out), 11u) << "past the end: nothing";
}

TEST(ConsoleHistory, AnAppendLongerThanTheRingKeepsItsTail) {
  ConsoleHistory history(4);
  history.append(bytes("ab"));
  history.append(bytes("0123456789"));
  EXPECT_EQ(history.end(), 12u);
  EXPECT_EQ(history.contents(), "6789");
}

TEST(ConsoleHistory, AssignedFromAStateGoesOnCounting) {
  ConsoleHistory history(4);
  history.assign(1000, bytes("abcdef"));
  EXPECT_EQ(history.start(), 996u);
  EXPECT_EQ(history.contents(), "cdef");
  history.append(bytes("g"));
  EXPECT_EQ(history.end(), 1001u);
  EXPECT_EQ(history.contents(), "defg");
  EXPECT_THROW(history.assign(2, bytes("abc")), std::invalid_argument);
}

}  // namespace
}  // namespace keel
