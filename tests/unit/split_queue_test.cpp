#include "devices/virtio/queue/split_queue.h"

#include <gtest/gtest.h>

#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

using testing::Buffer;
using testing::VirtqueueDriver;
using Kind = VirtqueueErrorKind;

#define EXPECT_VQ_ERROR(statement, expected_kind)                                \
  do {                                                                           \
    try {                                                                        \
      statement;                                                                 \
      ADD_FAILURE() << #statement " did not throw " << to_string(expected_kind); \
    } catch (const VirtqueueError& e) {                                          \
      EXPECT_EQ(e.kind(), expected_kind) << e.what();                            \
    }                                                                            \
  } while (0)

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kData = 0x10000;  // buffers live from here on

struct SplitQueueTest : ::testing::Test {
  GuestMemory memory{{{0, kMiB, 0}}};
};

// --- activation -----------------------------------------------------------

TEST_F(SplitQueueTest, ActivationAcceptsAWellPlacedQueue) {
  VirtqueueDriver driver(memory, 256);
  SplitQueue queue(memory, driver.config());
  EXPECT_FALSE(queue.broken());
  EXPECT_EQ(queue.state(), (SplitQueueState{0, 0}));
}

TEST_F(SplitQueueTest, ActivationAcceptsTheLargestQueue) {
  GuestMemory big({{0, 2 * kMiB, 0}});
  SplitQueueConfig config{32768, 0, 0x80000, 0xa0000, true, true};
  SplitQueue queue(big, config);
  EXPECT_EQ(queue.config().size, 32768);
}

TEST_F(SplitQueueTest, ActivationRefusesBadSizes) {
  for (uint16_t size : {0, 3, 6, 100, 32767, 40000, 65535}) {
    VirtqueueDriver driver(memory, 1);
    driver.config().size = size;
    EXPECT_VQ_ERROR(SplitQueue(memory, driver.config()), Kind::kBadQueueSize);
  }
}

TEST_F(SplitQueueTest, ActivationRefusesMisalignedRings) {
  VirtqueueDriver driver(memory, 16);
  auto config = driver.config();
  config.desc_table += 8;
  EXPECT_VQ_ERROR(SplitQueue(memory, config), Kind::kMisalignedRing);
  config = driver.config();
  config.driver_area += 1;
  EXPECT_VQ_ERROR(SplitQueue(memory, config), Kind::kMisalignedRing);
  config = driver.config();
  config.device_area += 2;
  EXPECT_VQ_ERROR(SplitQueue(memory, config), Kind::kMisalignedRing);
}

TEST_F(SplitQueueTest, ActivationRefusesRingsOutsideMemory) {
  VirtqueueDriver driver(memory, 16);
  for (uint64_t SplitQueueConfig::*field :
       {&SplitQueueConfig::desc_table, &SplitQueueConfig::driver_area,
        &SplitQueueConfig::device_area}) {
    auto config = driver.config();
    config.*field = kMiB - 16;  // aligned, but runs past the end
    EXPECT_VQ_ERROR(SplitQueue(memory, config), Kind::kRingOutsideMemory);
    config.*field = 0xfffffffffffffff0ull;  // would wrap around
    EXPECT_VQ_ERROR(SplitQueue(memory, config), Kind::kRingOutsideMemory);
  }
}

// --- popping and pushing --------------------------------------------------

TEST_F(SplitQueueTest, EmptyQueuePopsNothing) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  EXPECT_FALSE(queue.pop_chain());
}

TEST_F(SplitQueueTest, PopsAChainAndReturnsItThroughTheUsedRing) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  const uint16_t head = driver.write_chain(
      3,
      {{kData, 16}, {kData + 0x1000, 512}, {kData + 0x2000, 512, true}, {kData + 0x3000, 1, true}});
  driver.make_available(head);

  auto chain = queue.pop_chain();
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, 3);
  ASSERT_EQ(chain->segments.size(), 4u);
  EXPECT_EQ(chain->segments[0], (ChainSegment{kData, 16, false}));
  EXPECT_EQ(chain->segments[2], (ChainSegment{kData + 0x2000, 512, true}));
  EXPECT_EQ(chain->readable_bytes, 528u);
  EXPECT_EQ(chain->writable_bytes, 513u);
  EXPECT_FALSE(queue.pop_chain());

  queue.push_used(chain->head, 513);
  EXPECT_EQ(driver.used_idx(), 1);
  EXPECT_EQ(driver.used_elem(0).id, 3u);
  EXPECT_EQ(driver.used_elem(0).len, 513u);
  EXPECT_EQ(queue.state(), (SplitQueueState{1, 1}));
}

// The drain step (2.7.10): chains come with notifications off; an empty
// ring turns them back on; a chain made available meanwhile comes next.
TEST_F(SplitQueueTest, NextChainDrainsWithKicksOffAndReArmsWhenEmpty) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.make_available(driver.write_chain(0, {{kData, 16}}));
  driver.make_available(driver.write_chain(1, {{kData + 0x1000, 16}}));
  queue.disable_notification();
  EXPECT_EQ(driver.used_flags(), 1) << "VIRTQ_USED_F_NO_NOTIFY";
  auto first = queue.next_chain();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->head, 0);
  EXPECT_EQ(driver.used_flags(), 1) << "still off while chains remain";
  auto second = queue.next_chain();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->head, 1);
  EXPECT_FALSE(queue.next_chain());
  EXPECT_EQ(driver.used_flags(), 0) << "empty: kicks back on";
  // The driver adds one after the device re-armed: the next drain finds it.
  driver.make_available(driver.write_chain(2, {{kData + 0x2000, 16}}));
  queue.disable_notification();
  auto third = queue.next_chain();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->head, 2);
}

TEST_F(SplitQueueTest, IndicesWrapAroundSixteenBits) {
  VirtqueueDriver driver(memory, 4);
  SplitQueue queue(memory, driver.config());
  driver.set_avail_idx(65534);
  queue.set_state({65534, 65534});
  for (uint16_t i = 0; i < 4; ++i) {
    driver.write_chain(i, {{kData + i * 0x1000, 64, true}});
    driver.make_available(i);
  }
  for (uint16_t i = 0; i < 4; ++i) {
    auto chain = queue.pop_chain();
    ASSERT_TRUE(chain);
    EXPECT_EQ(chain->head, i);
    queue.push_used(chain->head, 64);
  }
  EXPECT_FALSE(queue.pop_chain());
  EXPECT_EQ(driver.used_idx(), 2);
  EXPECT_EQ(queue.state(), (SplitQueueState{2, 2}));
  EXPECT_EQ(driver.used_elem(65535 % 4).id, 1u);
}

TEST_F(SplitQueueTest, CompletionsMayComeOutOfOrder) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8, true}});
  driver.write_chain(1, {{kData + 8, 8, true}});
  driver.make_available(0);
  driver.make_available(1);
  auto a = queue.pop_chain();
  auto b = queue.pop_chain();
  queue.push_used(b->head, 8);
  queue.push_used(a->head, 4);
  EXPECT_EQ(driver.used_elem(0).id, 1u);
  EXPECT_EQ(driver.used_elem(1).id, 0u);
  EXPECT_EQ(driver.used_elem(1).len, 4u);
}

TEST_F(SplitQueueTest, RefusesAnAvailIndexTooFarAheadAndStaysBroken) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8}});
  driver.set_avail_idx(9);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kAvailIndexTooFarAhead);
  EXPECT_TRUE(queue.broken());
  driver.set_avail_idx(1);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kQueueBroken);
  EXPECT_VQ_ERROR(queue.push_used(0, 0), Kind::kQueueBroken);
}

TEST_F(SplitQueueTest, RefusesMoreOutstandingChainsThanTheQueueHolds) {
  VirtqueueDriver driver(memory, 4);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8}});
  for (int i = 0; i < 4; ++i) driver.make_available(0);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(queue.pop_chain());
  driver.make_available(0);  // a fifth, with four never returned
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kAvailIndexTooFarAhead);
}

TEST_F(SplitQueueTest, RefusesAnAvailIndexMovedBackwards) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8}});
  driver.make_available(0);
  ASSERT_TRUE(queue.pop_chain());
  driver.set_avail_idx(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kAvailIndexTooFarAhead);
}

TEST_F(SplitQueueTest, RefusesAHeadOutOfRange) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.make_available(8);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kHeadOutOfRange);
}

TEST_F(SplitQueueTest, RefusesANextOutOfRange) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.set_desc(0, kData, 8, kDescFNext, 8);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kNextOutOfRange);
}

TEST_F(SplitQueueTest, RefusesALoopingChain) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.set_desc(0, kData, 8, kDescFNext, 1);
  driver.set_desc(1, kData, 8, kDescFNext, 0);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kChainTooLong);
}

TEST_F(SplitQueueTest, RefusesASelfLoop) {
  VirtqueueDriver driver(memory, 1);
  SplitQueue queue(memory, driver.config());
  driver.set_desc(0, kData, 8, kDescFNext, 0);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kChainTooLong);
}

TEST_F(SplitQueueTest, AcceptsAChainUsingEveryDescriptor) {
  VirtqueueDriver driver(memory, 4);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(2, {{kData, 1}, {kData, 1}, {kData, 1}, {kData, 1}});
  driver.make_available(2);
  auto chain = queue.pop_chain();
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->segments.size(), 4u);
}

TEST_F(SplitQueueTest, RefusesBuffersOutsideMemory) {
  for (auto [gpa, len] : std::initializer_list<std::pair<uint64_t, uint32_t>>{
           {kMiB - 0x100, 0x200},           // runs into the hole
           {kMiB + 0x1000, 16},             // in the hole
           {3 * kMiB, 1},                   // just past the end
           {0xffffffffffffff00ull, 0x200},  // wraps around
           {2 * kMiB - 1, 0xffffffffu}}) {
    GuestMemory split({{0, kMiB, 0}, {2 * kMiB, kMiB, kMiB}});
    VirtqueueDriver driver(split, 8);
    SplitQueue queue(split, driver.config());
    driver.write_chain(0, {{kData, 16}, {gpa, len, true}});
    driver.make_available(0);
    EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kBufferOutsideMemory);
  }
  GuestMemory split({{0, kMiB, 0}, {2 * kMiB, kMiB, kMiB}});
  VirtqueueDriver driver(split, 8);
  SplitQueue queue(split, driver.config());
  driver.write_chain(0, {{3 * kMiB - 0x200, 0x200, true}});  // ends exactly at the end
  driver.make_available(0);
  EXPECT_TRUE(queue.pop_chain());
}

TEST_F(SplitQueueTest, RefusesWritableBeforeReadable) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 16}, {kData, 16, true}, {kData, 16}});
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kWritableBeforeReadable);
}

// --- indirect descriptors (2.7.5.3) ---------------------------------------

constexpr uint64_t kTable = 0x20000;

TEST_F(SplitQueueTest, WalksAnIndirectTable) {
  VirtqueueDriver driver(memory, 8, false, true);
  SplitQueue queue(memory, driver.config());
  VirtqueueDriver::set_table_desc(memory, kTable, 0, kData, 16, kDescFNext, 2);
  VirtqueueDriver::set_table_desc(memory, kTable, 2, kData + 0x1000, 4096, kDescFWrite | kDescFNext,
                                  1);
  VirtqueueDriver::set_table_desc(memory, kTable, 1, kData + 0x3000, 1, kDescFWrite);
  // The WRITE flag on the descriptor naming the table is ignored.
  driver.set_desc(5, kTable, 3 * 16, kDescFIndirect | kDescFWrite);
  driver.make_available(5);
  auto chain = queue.pop_chain();
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, 5);
  ASSERT_EQ(chain->segments.size(), 3u);
  EXPECT_EQ(chain->segments[1], (ChainSegment{kData + 0x1000, 4096, true}));
  EXPECT_EQ(chain->readable_bytes, 16u);
  EXPECT_EQ(chain->writable_bytes, 4097u);
}

TEST_F(SplitQueueTest, WalksDirectDescriptorsFollowedByAnIndirectOne) {
  VirtqueueDriver driver(memory, 8, false, true);
  SplitQueue queue(memory, driver.config());
  VirtqueueDriver::set_table_desc(memory, kTable, 0, kData + 0x100, 1, kDescFWrite);
  driver.set_desc(0, kData, 16, kDescFNext, 1);
  driver.set_desc(1, kTable, 16, kDescFIndirect);
  driver.make_available(0);
  auto chain = queue.pop_chain();
  ASSERT_TRUE(chain);
  ASSERT_EQ(chain->segments.size(), 2u);
  EXPECT_EQ(chain->segments[1], (ChainSegment{kData + 0x100, 1, true}));
}

struct IndirectCase {
  const char* name;
  bool negotiated;
  uint16_t flags;
  uint64_t table;
  uint32_t len;
  Kind expected;
};

TEST_F(SplitQueueTest, RefusesBadIndirectDescriptors) {
  for (const IndirectCase& c : std::initializer_list<IndirectCase>{
           {"not negotiated", false, kDescFIndirect, kTable, 16, Kind::kIndirectNotNegotiated},
           {"with NEXT", true, kDescFIndirect | kDescFNext, kTable, 16, Kind::kIndirectWithNext},
           {"empty table", true, kDescFIndirect, kTable, 0, Kind::kBadIndirectTableLength},
           {"ragged table", true, kDescFIndirect, kTable, 17, Kind::kBadIndirectTableLength},
           {"huge table", true, kDescFIndirect, kTable, 16 * 32769, Kind::kBadIndirectTableLength},
           {"outside memory", true, kDescFIndirect, kMiB - 16, 32,
            Kind::kIndirectTableOutsideMemory},
           {"wrapping", true, kDescFIndirect, 0xfffffffffffffff0ull, 32,
            Kind::kIndirectTableOutsideMemory},
       }) {
    SCOPED_TRACE(c.name);
    GuestMemory memory({{0, kMiB, 0}});
    VirtqueueDriver driver(memory, 8, false, c.negotiated);
    SplitQueue queue(memory, driver.config());
    VirtqueueDriver::set_table_desc(memory, kTable, 0, kData, 16, 0);
    driver.set_desc(0, c.table, c.len, c.flags, 1);
    driver.set_desc(1, kData, 1, kDescFWrite);
    driver.make_available(0);
    EXPECT_VQ_ERROR(queue.pop_chain(), c.expected);
  }
}

TEST_F(SplitQueueTest, RefusesNestedIndirectTables) {
  VirtqueueDriver driver(memory, 8, false, true);
  SplitQueue queue(memory, driver.config());
  VirtqueueDriver::set_table_desc(memory, kTable, 0, kData, 16, kDescFNext, 1);
  VirtqueueDriver::set_table_desc(memory, kTable, 1, kTable + 0x100, 16, kDescFIndirect);
  driver.set_desc(0, kTable, 32, kDescFIndirect);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kNestedIndirect);
}

TEST_F(SplitQueueTest, RefusesLoopsAndBadLinksInsideAnIndirectTable) {
  {
    VirtqueueDriver driver(memory, 8, false, true);
    SplitQueue queue(memory, driver.config());
    VirtqueueDriver::set_table_desc(memory, kTable, 0, kData, 16, kDescFNext, 1);
    VirtqueueDriver::set_table_desc(memory, kTable, 1, kData, 16, kDescFNext, 0);
    driver.set_desc(0, kTable, 32, kDescFIndirect);
    driver.make_available(0);
    EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kChainTooLong);
  }
  {
    VirtqueueDriver driver(memory, 8, false, true);
    SplitQueue queue(memory, driver.config());
    VirtqueueDriver::set_table_desc(memory, kTable, 0, kData, 16, kDescFNext,
                                    2);  // table has 2 entries
    driver.set_desc(0, kTable, 32, kDescFIndirect);
    driver.make_available(0);
    EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kNextOutOfRange);
  }
}

TEST_F(SplitQueueTest, RefusesTooManySegments) {
  VirtqueueDriver driver(memory, 8, false, true);
  SplitQueue queue(memory, driver.config());
  const uint16_t n = kMaxChainSegments + 1;
  for (uint16_t i = 0; i < n; ++i) {
    VirtqueueDriver::set_table_desc(memory, kTable, i, kData, 1, i + 1 < n ? kDescFNext : 0, i + 1);
  }
  driver.set_desc(0, kTable, 16 * n, kDescFIndirect);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kTooManySegments);
}

TEST_F(SplitQueueTest, RefusesChainsOfFourGiBOrMore) {
  GuestMemory big({{0, 16 * kMiB, 0}});  // sparse: never touched
  VirtqueueDriver driver(big, 8, false, true);
  SplitQueue queue(big, driver.config());
  const uint16_t n = 257;  // 257 x 16 MiB > 4 GiB
  for (uint16_t i = 0; i < n; ++i) {
    VirtqueueDriver::set_table_desc(big, kTable, i, 0, 16 * kMiB, i + 1 < n ? kDescFNext : 0,
                                    i + 1);
  }
  driver.set_desc(0, kTable, 16 * n, kDescFIndirect);
  driver.make_available(0);
  EXPECT_VQ_ERROR(queue.pop_chain(), Kind::kChainTooLarge);
}

// --- the device side ------------------------------------------------------

TEST_F(SplitQueueTest, PushUsedRefusesBadHeadsAndSpuriousCompletions) {
  VirtqueueDriver driver(memory, 8);
  {
    SplitQueue queue(memory, driver.config());
    EXPECT_VQ_ERROR(queue.push_used(0, 0), Kind::kNothingInFlight);
  }
  {
    SplitQueue queue(memory, driver.config());
    EXPECT_VQ_ERROR(queue.push_used(8, 0), Kind::kUsedHeadOutOfRange);
  }
  EXPECT_EQ(driver.used_idx(), 0);
}

TEST_F(SplitQueueTest, NotifiesUnlessTheDriverSuppressesInterrupts) {
  VirtqueueDriver driver(memory, 8);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8, true}});
  for (int i = 0; i < 3; ++i) driver.make_available(0);

  queue.push_used(queue.pop_chain()->head, 8);
  EXPECT_TRUE(queue.should_notify());
  EXPECT_FALSE(queue.should_notify());  // nothing new since

  driver.set_avail_flags(kAvailFNoInterrupt);
  queue.push_used(queue.pop_chain()->head, 8);
  EXPECT_FALSE(queue.should_notify());

  driver.set_avail_flags(0);
  queue.push_used(queue.pop_chain()->head, 8);
  EXPECT_TRUE(queue.should_notify());
}

TEST_F(SplitQueueTest, EventIdxNotifiesWhenUsedIdxPassesUsedEvent) {
  VirtqueueDriver driver(memory, 8, true);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8, true}});
  for (int i = 0; i < 6; ++i) driver.make_available(0);
  auto complete = [&] { queue.push_used(queue.pop_chain()->head, 8); };

  complete();                          // used idx 1
  EXPECT_TRUE(queue.should_notify());  // first decision after activation

  driver.set_used_event(2);  // "interrupt me once entry 2 is used", i.e. idx reaches 3
  complete();                // used idx 2
  EXPECT_FALSE(queue.should_notify());
  complete();  // used idx 3
  EXPECT_TRUE(queue.should_notify());

  driver.set_used_event(3);
  complete();
  complete();  // used idx 5: passed 3 between two decisions
  EXPECT_TRUE(queue.should_notify());
  // NO_INTERRUPT is ignored with EVENT_IDX.
  driver.set_avail_flags(kAvailFNoInterrupt);
  driver.set_used_event(5);
  complete();
  EXPECT_TRUE(queue.should_notify());
}

TEST_F(SplitQueueTest, EventIdxPublishesAvailEventOnPop) {
  VirtqueueDriver driver(memory, 8, true);
  SplitQueue queue(memory, driver.config());
  driver.write_chain(0, {{kData, 8}});
  driver.make_available(0);
  driver.make_available(0);
  queue.pop_chain();
  EXPECT_EQ(driver.avail_event(), 1);
  queue.pop_chain();
  EXPECT_EQ(driver.avail_event(), 2);
}

TEST_F(SplitQueueTest, EnableNotificationReportsChainsThatRacedIn) {
  for (bool event_idx : {false, true}) {
    GuestMemory memory({{0, kMiB, 0}});
    VirtqueueDriver driver(memory, 8, event_idx);
    SplitQueue queue(memory, driver.config());
    queue.disable_notification();
    if (!event_idx) {
      EXPECT_EQ(driver.used_flags(), kUsedFNoNotify);
    }
    EXPECT_FALSE(queue.enable_notification());
    EXPECT_EQ(driver.used_flags(), 0);
    driver.write_chain(0, {{kData, 8}});
    driver.make_available(0);
    EXPECT_TRUE(queue.enable_notification());
    ASSERT_TRUE(queue.pop_chain());
    EXPECT_FALSE(queue.enable_notification());
    if (event_idx) {
      EXPECT_EQ(driver.avail_event(), 1);
    }
  }
}

// --- snapshot and restore -------------------------------------------------

TEST_F(SplitQueueTest, RestoredStateContinuesWhereTheSnapshotLeftOff) {
  VirtqueueDriver driver(memory, 8);
  driver.write_chain(0, {{kData, 8, true}});
  driver.write_chain(1, {{kData, 8, true}});
  SplitQueueState saved;
  {
    SplitQueue queue(memory, driver.config());
    driver.make_available(0);
    driver.make_available(1);
    queue.pop_chain();  // head 0 in flight at snapshot time
    saved = queue.state();
  }
  SplitQueue restored(memory, driver.config());
  restored.set_state(saved);
  auto chain = restored.pop_chain();
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->head, 1);
  restored.push_used(0, 8);
  restored.push_used(1, 8);
  EXPECT_EQ(driver.used_idx(), 2);
}

TEST_F(SplitQueueTest, RestoreRefusesInconsistentIndices) {
  VirtqueueDriver driver(memory, 8);
  driver.set_avail_idx(5);
  SplitQueue queue(memory, driver.config());
  EXPECT_VQ_ERROR(queue.set_state({6, 5}), Kind::kBadRestoreState);  // popped more than available
  EXPECT_VQ_ERROR(queue.set_state({5, 60000}), Kind::kBadRestoreState);  // used ahead of popped
  EXPECT_VQ_ERROR(queue.set_state({100, 90}), Kind::kBadRestoreState);
  driver.set_avail_idx(20);
  EXPECT_VQ_ERROR(queue.set_state({11, 11}), Kind::kBadRestoreState);  // 9 pending > size 8
  EXPECT_FALSE(queue.broken());
  queue.set_state({15, 12});
  EXPECT_EQ(queue.state(), (SplitQueueState{15, 12}));
}

}  // namespace
}  // namespace keel::virtio
