// The VMM's own dirty tracking: the bitmap, and GuestMemory marking every
// write it hands out (and only those), harvests taking each mark once.
#include "common/dirty_bitmap.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/guest_memory.h"

namespace keel {
namespace {

constexpr uint64_t kPage = DirtyBitmap::kPageSize;
constexpr uint64_t kMiB = 1 << 20;

std::vector<uint64_t> pages_of(const std::vector<uint64_t>& bits) {
  std::vector<uint64_t> pages;
  for (size_t w = 0; w < bits.size(); ++w) {
    for (unsigned b = 0; b < 64; ++b) {
      if ((bits[w] >> b) & 1) pages.push_back(w * 64 + b);
    }
  }
  return pages;
}

TEST(DirtyBitmap, MarksEveryPageARangeTouchesAndAHarvestTakesThemOnce) {
  DirtyBitmap bitmap(300 * kPage + 1);  // 301 pages: the last one partial
  EXPECT_EQ(bitmap.pages(), 301u);
  EXPECT_EQ(bitmap.words(), 5u);
  bitmap.mark(kPage - 1, 2);             // pages 0 and 1
  bitmap.mark(62 * kPage, 4 * kPage);    // 62..65, across a word
  bitmap.mark(128 * kPage, 64 * kPage);  // one whole word
  bitmap.mark(300 * kPage, 1);           // the last page
  bitmap.mark(5 * kPage, 0);             // nothing
  EXPECT_EQ(bitmap.count(), 2u + 4 + 64 + 1);
  EXPECT_TRUE(bitmap.is_marked(65));
  EXPECT_FALSE(bitmap.is_marked(66));
  EXPECT_FALSE(bitmap.is_marked(301));
  const auto first = pages_of(bitmap.harvest());
  ASSERT_EQ(first.size(), 71u);
  EXPECT_EQ(first[0], 0u);
  EXPECT_EQ(first[2], 62u);
  EXPECT_EQ(first[6], 128u);
  EXPECT_EQ(first.back(), 300u);
  EXPECT_EQ(bitmap.count(), 0u);
  EXPECT_TRUE(pages_of(bitmap.harvest()).empty());

  std::vector<uint64_t> merged(bitmap.words(), 0);
  merged[0] = 1;  // a page someone else found dirty
  bitmap.mark(3 * kPage, 1);
  bitmap.harvest_into(merged);
  EXPECT_EQ(pages_of(merged), (std::vector<uint64_t>{0, 3}));
}

TEST(DirtyBitmap, RefusesRangesPastTheEnd) {
  DirtyBitmap bitmap(4 * kPage);
  EXPECT_THROW(bitmap.mark(4 * kPage, 1), std::out_of_range);
  EXPECT_THROW(bitmap.mark(3 * kPage, kPage + 1), std::out_of_range);
  EXPECT_THROW(bitmap.mark(~uint64_t{0}, 2), std::out_of_range);
  EXPECT_EQ(bitmap.count(), 0u);
}

// Marks from several threads while harvests run: every mark lands in
// exactly one harvest.
TEST(DirtyBitmap, NoMarkIsLostToAConcurrentHarvest) {
  constexpr uint64_t kPages = 4096;
  DirtyBitmap bitmap(kPages * kPage);
  std::vector<int> seen(kPages, 0);
  std::atomic<bool> done{false};
  std::thread harvester([&] {
    while (!done.load()) {
      for (uint64_t p : pages_of(bitmap.harvest())) ++seen[p];
    }
  });
  std::vector<std::thread> markers;
  for (unsigned t = 0; t < 4; ++t) {
    markers.emplace_back([&, t] {
      for (uint64_t p = t; p < kPages; p += 4) bitmap.mark(p * kPage, 1);
    });
  }
  for (auto& m : markers) m.join();
  done = true;
  harvester.join();
  for (uint64_t p : pages_of(bitmap.harvest())) ++seen[p];
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(seen[p], 1) << "page " << p;
}

// Two regions around a hole, as the machine lays RAM out: marks go by memfd
// offset, not by guest-physical address.
TEST(GuestMemoryDirty, WritesAreMarkedByFileOffsetAndIoOnlyOnceMarked) {
  GuestMemory memory({{0, 2 * kMiB, 0}, {16 * kMiB, 2 * kMiB, 2 * kMiB}});
  EXPECT_EQ(memory.dirty().pages(), 4 * kMiB / kPage);
  EXPECT_EQ(memory.dirty().count(), 0u);

  memory.write_obj<uint32_t>(0x1000, 7);                         // page 1
  memory.write(16 * kMiB + 0x3ffe, std::vector<uint8_t>(4, 1));  // straddles 2 MiB + pages 3 and 4
  *memory.host_range_for_write(0x5000, 1) = 1;                   // page 5
  (void)memory.host_range(0x9000, 4096);                         // a read: nothing
  uint8_t* io = memory.host_range_for_io(0x7000, 4096);          // data lands later
  EXPECT_EQ(pages_of(memory.dirty().harvest()),
            (std::vector<uint64_t>{1, 5, 2 * kMiB / kPage + 3, 2 * kMiB / kPage + 4}));
  io[0] = 1;
  memory.mark_dirty(0x7000, 4096);
  EXPECT_EQ(pages_of(memory.dirty().harvest()), (std::vector<uint64_t>{7}));

  // Bounds: the same checks as every other access.
  EXPECT_THROW(memory.mark_dirty(2 * kMiB, 1), std::out_of_range);  // the hole
  EXPECT_THROW(memory.host_range_for_io(18 * kMiB - 1, 2), std::out_of_range);
  EXPECT_EQ(memory.dirty().count(), 0u);

  // Filling all of it (a restore) marks every page.
  memory.host_all_for_write()[0] = 1;
  EXPECT_EQ(memory.dirty().count(), memory.dirty().pages());
}

}  // namespace
}  // namespace keel
