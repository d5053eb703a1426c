#include "devices/virtio/blk/virtio_blk_device.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "common/error.h"
#include "common/little_endian.h"
#include "tests/support/device_configs.h"
#include "tests/support/temp_image.h"
#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

using keel::testing::pattern;
using keel::testing::TempImage;
using testing::Buffer;
using testing::VirtqueueDriver;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kImageSize = 16 * kMiB;
constexpr uint16_t kSize = 128;  // the test driver's ring layout holds up to 128

struct FakeTransport : VirtioTransport {
  void queue_interrupt(uint16_t queue) override {
    EXPECT_FALSE(mutex.try_lock()) << "called without the lock";
    EXPECT_EQ(queue, 0);
    ++interrupts;
  }
  void config_changed() override { ++config_changes; }
  void needs_reset(const std::string& why) override {
    last_reason = why;
    EXPECT_FALSE(mutex.try_lock()) << "called without the lock";
    ++resets_needed;
  }
  std::mutex& lock() override { return mutex; }

  std::mutex mutex;
  int interrupts = 0;
  int config_changes = 0;
  int resets_needed = 0;
  std::string last_reason;
};

// One request as the driver lays it out: header, data, status byte.
struct Request {
  uint16_t head;
  uint64_t data;
  uint64_t status;
};

struct VirtioBlkTest : ::testing::Test {
  GuestMemory memory{{{0, 8 * kMiB, 0}}};
  TempImage image{"/var/tmp", kImageSize};
  boost::asio::io_context events;
  FakeTransport transport;
  VirtqueueDriver driver{memory, kSize};
  std::unique_ptr<VirtioBlkDevice> device;
  uint64_t next_gpa = 0x10000;
  uint16_t next_desc = 0;

  void create(bool read_only = false, std::string serial = "") {
    device =
        std::make_unique<VirtioBlkDevice>(events, disk_config(image.path(), read_only, serial));
    device->attach(transport);
  }
  void activate(uint64_t features) {
    std::vector<std::optional<SplitQueue>> queues;
    queues.emplace_back(SplitQueue(memory, driver.config()));
    std::lock_guard lock(transport.mutex);
    device->activate(memory, std::move(queues), features | kFVersion1);
  }
  void start(bool read_only = false) {
    create(read_only);
    activate(device->device_features());
  }
  void kick() {
    std::lock_guard lock(transport.mutex);
    device->queue_notify(0);
  }
  // Runs the event loop until the used index reaches `used`.
  void run_until_used(uint16_t used) {
    while (driver.used_idx() != used) {
      ASSERT_GT(events.run_one_for(std::chrono::seconds(10)), 0u)
          << "no completion; used " << driver.used_idx();
    }
  }

  uint64_t alloc(uint64_t length, uint64_t align = 512) {
    next_gpa = (next_gpa + align - 1) & ~(align - 1);
    const uint64_t gpa = next_gpa;
    next_gpa += length;
    return gpa;
  }
  // A request of `type` at `sector` with `data_len` bytes of data the device
  // reads (`device_writes` false) or writes; made available, not kicked.
  Request add(uint32_t type, uint64_t sector, uint32_t data_len, bool device_writes) {
    const uint64_t header = alloc(16, 16);
    memory.write_obj(header, BlkReqHeader{type, 0, sector});
    const uint64_t data = alloc(data_len);
    const uint64_t status = alloc(1, 1);
    memory.write_obj<uint8_t>(status, 0xee);
    const uint16_t head = next_desc;
    if (data_len > 0) {
      driver.write_chain(head, {{header, 16}, {data, data_len, device_writes}, {status, 1, true}});
      next_desc = static_cast<uint16_t>((next_desc + 3) % kSize);
    } else {
      driver.write_chain(head, {{header, 16}, {status, 1, true}});
      next_desc = static_cast<uint16_t>((next_desc + 2) % kSize);
    }
    driver.make_available(head);
    return {head, data, status};
  }
  Request add_ranges(uint32_t type, std::vector<BlkDiscardWriteZeroes> ranges) {
    const auto bytes = static_cast<uint32_t>(ranges.size() * sizeof(BlkDiscardWriteZeroes));
    Request r = add(type, 0, bytes, false);
    memory.write(r.data, {reinterpret_cast<const uint8_t*>(ranges.data()), bytes});
    return r;
  }
  uint8_t status(const Request& r) { return memory.read_obj<uint8_t>(r.status); }
  std::vector<uint8_t> guest(uint64_t gpa, size_t length) {
    std::vector<uint8_t> out(length);
    memory.read(gpa, out);
    return out;
  }
  // The used element for the request returned `n`-th (0-based).
  VirtqUsedElem used(uint16_t n) { return driver.used_elem(n); }
};

TEST_F(VirtioBlkTest, OffersTheBlockFeaturesAndConfiguration) {
  create(false, "disk-0");
  EXPECT_EQ(device->device_type(), kDeviceTypeBlock);
  EXPECT_EQ(device->num_queues(), 1);
  const uint64_t f = device->device_features();
  for (uint64_t bit :
       {kBlkFSegMax, kBlkFBlkSize, kBlkFFlush, kBlkFDiscard, kBlkFWriteZeroes, kBlkFTopology}) {
    EXPECT_TRUE(f & bit) << bit;
  }
  EXPECT_FALSE(f & kBlkFRo);
  ASSERT_EQ(device->config_size(), kBlkConfigSize);
  BlkConfig c{};
  device->config_read(0, {reinterpret_cast<uint8_t*>(&c), kBlkConfigSize});
  EXPECT_EQ(c.capacity, kImageSize / 512);
  EXPECT_EQ(c.blk_size, 512u);
  EXPECT_TRUE(f & kBlkFSizeMax);
  EXPECT_EQ(c.size_max, VirtioBlkDevice::kSizeMax);
  EXPECT_GT(c.seg_max, 0u);
  EXPECT_LE(c.seg_max, VirtioBlkDevice::kQueueSize - 2u);
  EXPECT_EQ(c.num_queues, 1);
  EXPECT_GT(c.max_discard_sectors, 0u);
  EXPECT_GT(c.max_discard_seg, 0u);
  EXPECT_GT(c.discard_sector_alignment, 0u);
  EXPECT_GT(c.max_write_zeroes_sectors, 0u);
  EXPECT_EQ(c.write_zeroes_may_unmap, 1);
  // A field read on its own, as drivers do.
  uint8_t capacity_high[4];
  device->config_read(4, capacity_high);
  EXPECT_EQ(capacity_high[0], 0);
  uint8_t blk_size[4];
  device->config_read(20, blk_size);
  EXPECT_EQ(load_le(blk_size), 512u);
}

TEST_F(VirtioBlkTest, WriteFlushAndReadBack) {
  start();
  const auto data = pattern(8 * 512, 11);
  const Request w = add(kBlkTOut, 100, 8 * 512, false);
  memory.write(w.data, data);
  kick();
  run_until_used(1);
  EXPECT_EQ(status(w), kBlkSOk);
  EXPECT_EQ(used(0).id, w.head);
  EXPECT_EQ(used(0).len, 1u);  // only the status byte was written

  const Request f = add(kBlkTFlush, 0, 0, false);
  kick();
  run_until_used(2);
  EXPECT_EQ(status(f), kBlkSOk);

  const Request r = add(kBlkTIn, 100, 8 * 512, true);
  kick();
  run_until_used(3);
  EXPECT_EQ(status(r), kBlkSOk);
  EXPECT_EQ(used(2).id, r.head);
  EXPECT_EQ(used(2).len, 8 * 512 + 1u);
  EXPECT_EQ(guest(r.data, data.size()), data);
  EXPECT_EQ(image.read(100 * 512, data.size()), data);  // in the file itself
  EXPECT_GE(transport.interrupts, 3);
  EXPECT_EQ(transport.resets_needed, 0);
  EXPECT_EQ(device->requests_in_flight(), 0u);
}

// Dirty tracking (common/dirty_bitmap.h): a read's buffers are marked when
// its completion arrives, not when it is submitted. A harvest in between
// (a migration round) must not take them: it would copy the pages before
// the data lands and never see them again.
TEST_F(VirtioBlkTest, AReadIsMarkedDirtyWhenItsCompletionArrivesNotAtSubmission) {
  start();
  const uint32_t len = 3 * 4096;
  const Request r = add(kBlkTIn, 64, len, true);
  auto page_marked = [](const std::vector<uint64_t>& bits, uint64_t gpa) {
    const uint64_t page = gpa / DirtyBitmap::kPageSize;  // one region from 0: gpa == offset
    return (bits[page / 64] >> (page % 64)) & 1;
  };
  memory.dirty().harvest();  // the driver's own writes: header, chain, rings
  kick();
  ASSERT_EQ(device->requests_in_flight(), 1u);
  const auto before = memory.dirty().harvest();
  for (uint64_t gpa = r.data; gpa < r.data + len; gpa += 4096) {
    EXPECT_FALSE(page_marked(before, gpa))
        << "read buffer page at " << gpa << " marked at submission";
  }
  EXPECT_FALSE(page_marked(before, r.status));
  run_until_used(1);
  EXPECT_EQ(status(r), kBlkSOk);
  const auto after = memory.dirty().harvest();
  for (uint64_t gpa = r.data; gpa < r.data + len; gpa += 4096) {
    EXPECT_TRUE(page_marked(after, gpa))
        << "read buffer page at " << gpa << " not marked at completion";
  }
  EXPECT_TRUE(page_marked(after, r.data + len - 1));
  EXPECT_TRUE(page_marked(after, r.status));
  EXPECT_TRUE(page_marked(after, driver.config().device_area)) << "the used ring";
  EXPECT_EQ(memory.dirty().count(), 0u) << "a harvest leaves nothing behind";
}

// A read dropped by a device reset may have landed in part: its buffers
// count as written.
TEST_F(VirtioBlkTest, AReadDroppedByAResetIsMarkedDirty) {
  start();
  const Request r = add(kBlkTIn, 64, 4096, true);
  memory.dirty().harvest();
  kick();
  ASSERT_EQ(device->requests_in_flight(), 1u);
  {
    std::lock_guard lock(transport.mutex);
    device->reset();
  }
  EXPECT_TRUE(memory.dirty().is_marked(r.data / DirtyBitmap::kPageSize));
}

TEST_F(VirtioBlkTest, CountsRequestsBytesAndErrors) {
  start();
  const Request w = add(kBlkTOut, 0, 8192, false);
  const Request r = add(kBlkTIn, 0, 4096, true);
  const Request bad = add(kBlkTIn, ~uint64_t{0} >> 9, 512, true);  // past the disk's end
  kick();
  run_until_used(3);
  ASSERT_EQ(status(w), kBlkSOk);
  ASSERT_EQ(status(r), kBlkSOk);
  ASSERT_NE(status(bad), kBlkSOk);
  std::map<std::string, uint64_t> c;
  {
    std::lock_guard lock(transport.mutex);
    for (const auto& [name, value] : device->counters()) c[name] = value;
  }
  EXPECT_EQ(c["requests"], 3u);
  EXPECT_EQ(c["written_bytes"], 8192u);
  EXPECT_EQ(c["read_bytes"], 4096u);
  EXPECT_EQ(c["errors"], 1u);
  EXPECT_EQ(c["direct_ops"] + c["buffered_ops"], 2u) << "two requests reached the disk";
}

TEST_F(VirtioBlkTest, ThirtyTwoRequestsInFlight) {
  start();
  std::vector<Request> writes;
  for (int i = 0; i < 32; ++i) {
    writes.push_back(add(kBlkTOut, static_cast<uint64_t>(i) * 16, 4096, false));
    memory.write(writes.back().data, pattern(4096, static_cast<uint8_t>(i)));
  }
  kick();
  // All submitted by the kick, none completed before the event loop runs.
  EXPECT_EQ(device->requests_in_flight(), 32u);
  EXPECT_EQ(driver.used_idx(), 0);
  run_until_used(32);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(status(writes[i]), kBlkSOk) << i;
    EXPECT_EQ(image.read(static_cast<uint64_t>(i) * 16 * 512, 4096),
              pattern(4096, static_cast<uint8_t>(i)))
        << i;
  }
  std::vector<Request> reads;
  for (int i = 0; i < 32; ++i)
    reads.push_back(add(kBlkTIn, static_cast<uint64_t>(i) * 16, 4096, true));
  kick();
  EXPECT_EQ(device->requests_in_flight(), 32u);
  run_until_used(64);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(status(reads[i]), kBlkSOk) << i;
    EXPECT_EQ(guest(reads[i].data, 4096), pattern(4096, static_cast<uint8_t>(i))) << i;
  }
  EXPECT_EQ(device->requests_in_flight(), 0u);
}

TEST_F(VirtioBlkTest, ReadOnlyDiskRefusesWrites) {
  image.write(0, pattern(4096, 1));
  start(/*read_only=*/true);
  EXPECT_TRUE(device->device_features() & kBlkFRo);
  EXPECT_FALSE(device->device_features() & kBlkFDiscard);
  EXPECT_FALSE(device->device_features() & kBlkFWriteZeroes);
  const Request w = add(kBlkTOut, 0, 4096, false);
  memory.write(w.data, pattern(4096, 99));
  const Request r = add(kBlkTIn, 0, 4096, true);
  const Request f = add(kBlkTFlush, 0, 0, false);
  kick();
  run_until_used(3);
  EXPECT_EQ(status(w), kBlkSIoErr);
  EXPECT_EQ(status(r), kBlkSOk);
  EXPECT_EQ(status(f), kBlkSOk);
  EXPECT_EQ(guest(r.data, 4096), pattern(4096, 1));
  EXPECT_EQ(image.read(0, 4096), pattern(4096, 1));
}

TEST_F(VirtioBlkTest, DiscardAndWriteZeroesReachTheFile) {
  const auto data = pattern(4 * kMiB, 5);
  image.write(0, data);
  start();
  // Discard 1 MiB at 1 MiB; write zeroes at 2 MiB (keep) and 3 MiB (unmap).
  const Request d = add_ranges(kBlkTDiscard, {{kMiB / 512, kMiB / 512, 0}});
  const Request z = add_ranges(
      kBlkTWriteZeroes, {{2 * kMiB / 512, 2048, 0}, {3 * kMiB / 512, 2048, kBlkRangeFlagUnmap}});
  kick();
  run_until_used(2);
  EXPECT_EQ(status(d), kBlkSOk);
  EXPECT_EQ(status(z), kBlkSOk);
  EXPECT_EQ(image.read(0, kMiB), std::vector<uint8_t>(data.begin(), data.begin() + kMiB));
  EXPECT_EQ(image.read(kMiB, 3 * kMiB), std::vector<uint8_t>(3 * kMiB, 0));
}

TEST_F(VirtioBlkTest, DiscardNotNegotiatedIsUnsupported) {
  create();
  activate(device->device_features() & ~(kBlkFDiscard | kBlkFWriteZeroes));
  const Request d = add_ranges(kBlkTDiscard, {{0, 8, 0}});
  kick();
  run_until_used(1);
  EXPECT_EQ(status(d), kBlkSUnsupp);
}

TEST_F(VirtioBlkTest, GetIdAnswersTheSerial) {
  create(false, "keel-serial-1");
  activate(device->device_features());
  const Request r = add(kBlkTGetId, 0, 20, true);
  kick();
  run_until_used(1);
  EXPECT_EQ(status(r), kBlkSOk);
  EXPECT_EQ(used(0).len, 21u);
  auto id = guest(r.data, 20);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(id.data()), 13), "keel-serial-1");
  EXPECT_EQ(id[13], 0);
}

TEST_F(VirtioBlkTest, SerialDefaultsToTheFileName) {
  create();
  const std::string name = image.path().substr(image.path().rfind('/') + 1);
  EXPECT_EQ(device->serial(), name.substr(0, 20));
  const auto too_long = disk_config(image.path(), false, std::string(21, 'x'));
  EXPECT_THROW(VirtioBlkDevice(events, too_long), InputError);
}

TEST_F(VirtioBlkTest, OutOfRangeSectorIsAnIoError) {
  start();
  const uint64_t capacity = kImageSize / 512;
  const Request past = add(kBlkTIn, capacity - 4, 8 * 512, true);  // runs off the end
  const Request last = add(kBlkTIn, capacity - 8, 8 * 512, true);  // the last 8 sectors
  const Request huge = add(kBlkTOut, UINT64_MAX - 1, 512, false);  // overflows
  kick();
  run_until_used(3);
  EXPECT_EQ(status(past), kBlkSIoErr);
  EXPECT_EQ(status(last), kBlkSOk);
  EXPECT_EQ(status(huge), kBlkSIoErr);
  EXPECT_EQ(transport.resets_needed, 0);
}

TEST_F(VirtioBlkTest, UnknownTypeIsUnsupported) {
  start();
  const Request r = add(77, 0, 0, false);
  kick();
  run_until_used(1);
  EXPECT_EQ(status(r), kBlkSUnsupp);
  EXPECT_EQ(used(0).len, 1u);
}

TEST_F(VirtioBlkTest, ChainWithoutStatusByteIsReturnedEmpty) {
  start();
  const uint64_t header = alloc(16, 16);
  memory.write_obj(header, BlkReqHeader{kBlkTIn, 0, 0});
  driver.write_chain(0, {{header, 16}});  // nothing writable
  driver.make_available(0);
  kick();
  run_until_used(1);
  EXPECT_EQ(used(0).id, 0u);
  EXPECT_EQ(used(0).len, 0u);
  EXPECT_EQ(transport.resets_needed, 0);
}

TEST_F(VirtioBlkTest, BrokenChainMeansNeedsReset) {
  start();
  // A descriptor chained to itself: a loop the queue refuses.
  const uint64_t header = alloc(16, 16);
  driver.set_desc(0, header, 16, kDescFNext, 0);
  driver.make_available(0);
  kick();
  EXPECT_EQ(transport.resets_needed, 1);
  // The device no longer touches the queue, however often it is kicked.
  const Request r = add(kBlkTFlush, 0, 0, false);
  kick();
  EXPECT_EQ(transport.resets_needed, 1);
  EXPECT_EQ(driver.used_idx(), 0);
  EXPECT_EQ(status(r), 0xee);
  // Reset and a fresh activation bring it back.
  {
    std::lock_guard lock(transport.mutex);
    device->reset();
  }
  VirtqueueDriver fresh(memory, kSize);
  memory.write(fresh.config().device_area, std::vector<uint8_t>(used_ring_bytes(kSize), 0));
  memory.write(fresh.config().driver_area, std::vector<uint8_t>(avail_ring_bytes(kSize), 0));
  next_desc = 0;
  activate(device->device_features());
  const Request again = add(kBlkTFlush, 0, 0, false);
  kick();
  run_until_used(1);
  EXPECT_EQ(status(again), kBlkSOk);
}

TEST_F(VirtioBlkTest, BufferOutsideMemoryMeansNeedsReset) {
  start();
  const uint64_t header = alloc(16, 16);
  driver.write_chain(0, {{header, 16}, {memory.size() - 256, 4096, true}});
  driver.make_available(0);
  kick();
  EXPECT_EQ(transport.resets_needed, 1);
  EXPECT_EQ(driver.used_idx(), 0);
}

// A reset never waits for the kernel (it runs on a vCPU thread holding the
// lock the event loop needs): the requests are abandoned, reset_pending()
// holds until the event loop has collected the last of them, and nothing of
// theirs reaches the driver.
TEST_F(VirtioBlkTest, ResetAbandonsRequestsInFlightWithoutWaiting) {
  image.write(0, pattern(4 * kMiB, 7));
  start();
  std::vector<Request> reads;
  for (int i = 0; i < 32; ++i)
    reads.push_back(add(kBlkTIn, static_cast<uint64_t>(i) * 256, 128 * 1024, true));
  kick();
  EXPECT_EQ(device->requests_in_flight(), 32u);
  {
    std::lock_guard lock(transport.mutex);
    device->reset();
    // Completions are collected only on the event loop, which has not run.
    EXPECT_TRUE(device->reset_pending());
  }
  EXPECT_EQ(device->requests_in_flight(), 0u);
  // The reads' buffers may still be written: marked again when they are done.
  memory.dirty().harvest();
  while (device->reset_pending()) {
    ASSERT_GT(events.run_one_for(std::chrono::seconds(10)), 0u) << "the kernel never finished";
  }
  EXPECT_EQ(device->disk().outstanding(), 0u);
  for (const Request& r : reads) {
    EXPECT_TRUE(memory.dirty().is_marked(r.data / DirtyBitmap::kPageSize));
    EXPECT_EQ(status(r), 0xee);
  }
  events.poll();
  EXPECT_EQ(driver.used_idx(), 0);
  EXPECT_EQ(transport.resets_needed, 0);
}

// A snapshot taken while a reset is pending waits for the abandoned
// requests: they may still write guest memory.
TEST_F(VirtioBlkTest, QuiesceWaitsForAPendingResetsRequests) {
  start();
  for (int i = 0; i < 8; ++i) add(kBlkTIn, static_cast<uint64_t>(i) * 256, 128 * 1024, true);
  kick();
  std::lock_guard lock(transport.mutex);
  device->reset();
  ASSERT_TRUE(device->reset_pending());
  device->quiesce();
  EXPECT_FALSE(device->reset_pending());
  EXPECT_EQ(device->disk().outstanding(), 0u);
}

// Data in flight is bounded: chains beyond kMaxBytesInFlight wait in the
// ring until completions make room, then go on by themselves.
TEST_F(VirtioBlkTest, BytesInFlightAreBoundedAndTheRestFollows) {
  start();
  constexpr uint32_t kSegments = 8;  // of size_max each, all over one buffer
  const uint64_t buffer = alloc(VirtioBlkDevice::kSizeMax, 4096);
  const uint64_t per_request = uint64_t{kSegments} * VirtioBlkDevice::kSizeMax;
  const int requests = static_cast<int>(VirtioBlkDevice::kMaxBytesInFlight / per_request) + 2;
  for (int i = 0; i < requests; ++i) {
    const uint64_t header = alloc(16, 16);
    memory.write_obj(header, BlkReqHeader{kBlkTIn, 0, 0});
    const uint64_t status = alloc(1, 1);
    std::vector<Buffer> chain{{header, 16}};
    for (uint32_t k = 0; k < kSegments; ++k)
      chain.push_back({buffer, VirtioBlkDevice::kSizeMax, true});
    chain.push_back({status, 1, true});
    driver.write_chain(next_desc, chain);
    driver.make_available(next_desc);
    next_desc = static_cast<uint16_t>(next_desc + chain.size());
  }
  kick();
  EXPECT_EQ(device->requests_in_flight(), VirtioBlkDevice::kMaxBytesInFlight / per_request);
  run_until_used(static_cast<uint16_t>(requests));
  for (int i = 0; i < requests; ++i) EXPECT_EQ(used(static_cast<uint16_t>(i)).len, per_request + 1);
  EXPECT_EQ(transport.resets_needed, 0);
}

TEST_F(VirtioBlkTest, DestroyedWithRequestsInFlight) {
  start();
  for (int i = 0; i < 16; ++i) add(kBlkTIn, static_cast<uint64_t>(i) * 128, 65536, true);
  kick();
  device.reset();  // waits for the kernel before the buffers could go away
  events.poll();   // the aborted wait's handler must not touch the device
}

// One-descriptor chains with no header: each is answered at once (IOERR),
// so a driver refilling as fast as they come back could hold one kick forever.
// A kick takes at most kBurst; the rest follows on the event loop.
TEST_F(VirtioBlkTest, OneKickTakesABoundedNumberOfChains) {
  static_assert(VirtioBlkDevice::kBurst < 100 && 100 < kSize);
  start();
  std::vector<uint64_t> statuses;
  for (uint16_t i = 0; i < 100; ++i) {
    statuses.push_back(alloc(1, 1));
    memory.write_obj<uint8_t>(statuses.back(), 0xee);
    driver.make_available(driver.write_chain(i, {{statuses.back(), 1, true}}));
  }
  kick();
  EXPECT_EQ(driver.used_idx(), VirtioBlkDevice::kBurst);
  EXPECT_EQ(transport.interrupts, 1);
  run_until_used(100);
  for (uint64_t s : statuses) EXPECT_EQ(memory.read_obj<uint8_t>(s), kBlkSIoErr);
  EXPECT_EQ(transport.interrupts, 2);
  EXPECT_EQ(transport.resets_needed, 0);
  // Nothing left: the later round turned kicks back on.
  EXPECT_EQ(driver.used_flags(), 0);
}

TEST_F(VirtioBlkTest, ResetDropsTheRoundLeftForLater) {
  start();
  for (uint16_t i = 0; i < 100; ++i) {
    driver.make_available(driver.write_chain(i, {{alloc(1, 1), 1, true}}));
  }
  kick();
  ASSERT_EQ(driver.used_idx(), VirtioBlkDevice::kBurst);
  {
    std::lock_guard lock(transport.mutex);
    device->reset();
  }
  events.poll();  // the queued round belongs to the queue reset dropped
  EXPECT_EQ(driver.used_idx(), VirtioBlkDevice::kBurst);
  // A new activation starts over and is not stuck behind the old round.
  driver.set_avail_idx(0);
  memory.write_obj<uint16_t>(driver.config().device_area + kUsedIdxOffset, 0);
  activate(device->device_features());
  driver.make_available(driver.write_chain(0, {{alloc(1, 1), 1, true}}));
  kick();
  EXPECT_EQ(driver.used_idx(), 1);
}

TEST_F(VirtioBlkTest, EventIdxSuppressesInterruptsTheDriverDidNotAskFor) {
  driver.config().event_idx = true;
  create();
  activate(device->device_features() | kFRingEventIdx);
  add(kBlkTFlush, 0, 0, false);
  kick();
  run_until_used(1);
  EXPECT_EQ(transport.interrupts, 1);  // the first completion always interrupts
  // 2.7.7.2: interrupt once used idx passes 3, i.e. at the fourth request.
  driver.set_used_event(3);
  for (uint16_t n = 2; n <= 4; ++n) {
    add(kBlkTFlush, 0, 0, false);
    kick();
    run_until_used(n);
    EXPECT_EQ(transport.interrupts, n < 4 ? 1 : 2) << n;
  }
  // The device asks for a kick at the next chain it has not seen.
  EXPECT_EQ(driver.avail_event(), 4);
}

}  // namespace
}  // namespace keel::virtio
