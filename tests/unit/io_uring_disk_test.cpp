#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/error.h"
#include "common/memory_mapping.h"
#include "storage/raw_disk.h"
#include "tests/support/temp_image.h"

namespace keel::storage {
namespace {

using keel::testing::pattern;
using keel::testing::TempImage;

constexpr uint64_t kMiB = 1 << 20;
// /var/tmp is disk-backed (O_DIRECT works there); /dev/shm is tmpfs.
const char* const kDiskDir = "/var/tmp";
const char* const kTmpfsDir = "/dev/shm";

// Page-aligned memory standing in for guest buffers.
struct Buffers {
  explicit Buffers(size_t size)
      : mapping(MemoryMapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                                   "test buffers")) {}
  uint8_t* at(size_t offset) { return mapping.data() + offset; }
  MemoryMapping mapping;
};

// Collects completions, waiting on the disk's eventfd as an event loop would.
struct Completions {
  explicit Completions(RawDisk& d) : disk(d) {
    disk.set_completion_handler([this](uint64_t tag, int64_t result) { results[tag] = result; });
  }
  // Waits until `count` results are in (or 10 s pass without progress).
  bool wait_for(size_t count) {
    disk.submit();
    while (results.size() < count) {
      pollfd pfd{disk.event_fd(), POLLIN, 0};
      if (::poll(&pfd, 1, 10000) != 1) return false;
      disk.process_completions();
    }
    return true;
  }
  int64_t result(uint64_t tag) { return results.count(tag) ? results[tag] : INT64_MIN; }

  RawDisk& disk;
  std::map<uint64_t, int64_t> results;
};

bool dio_supported(const std::string& path) {
  struct statx stx {};
  return ::statx(AT_FDCWD, path.c_str(), 0, STATX_DIOALIGN, &stx) == 0 &&
         (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 0;
}

TEST(RawDisk, OpensAnImageAndReportsItsSize) {
  TempImage image(kDiskDir, 8 * kMiB + 512);
  RawDisk disk({.path = image.path()});
  EXPECT_EQ(disk.size(), 8 * kMiB + 512);
  EXPECT_FALSE(disk.read_only());
  EXPECT_EQ(disk.path(), image.path());
  if (dio_supported(image.path())) {
    EXPECT_TRUE(disk.direct());
    EXPECT_GT(disk.direct_offset_align(), 0u);
  }
  EXPECT_EQ(disk.outstanding(), 0u);
}

TEST(RawDisk, MissingImageIsAnInputErrorNamingIt) {
  try {
    RawDisk disk({.path = "/var/tmp/keel-no-such-image"});
    FAIL() << "opened a missing image";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("keel-no-such-image"), std::string::npos) << e.what();
  }
}

// OFD locks conflict between open files, also within one process.
TEST(RawDisk, ASecondWriterOrAWriterBesideReadersIsRefusedByName) {
  TempImage image(kDiskDir, kMiB);
  {
    RawDisk writer({.path = image.path()});
    EXPECT_TRUE(writer.claimed());
    try {
      RawDisk second({.path = image.path()});
      FAIL() << "two writers on one image";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("disk image " + image.path() + " is in use"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(RawDisk({.path = image.path(), .read_only = true}), InputError);
  }
  RawDisk reader({.path = image.path(), .read_only = true});
  RawDisk another_reader({.path = image.path(), .read_only = true});
  EXPECT_THROW(RawDisk({.path = image.path()}), InputError);
}

// A migration's handover: the destination opens unclaimed, the source
// releases, the destination claims; a claim while the source holds fails.
TEST(RawDisk, TheLockIsHandedOverBetweenTwoOpenImages) {
  TempImage image(kDiskDir, kMiB);
  RawDisk source({.path = image.path()});
  RawDisk destination({.path = image.path(), .claim = false});
  EXPECT_FALSE(destination.claimed());
  EXPECT_THROW(destination.claim(), InputError);
  EXPECT_FALSE(destination.claimed());
  source.release();
  EXPECT_FALSE(source.claimed());
  destination.claim();
  EXPECT_TRUE(destination.claimed());
  EXPECT_THROW(source.claim(), InputError);
}

TEST(RawDisk, DirectoryIsRefused) {
  EXPECT_THROW(RawDisk({.path = "/var/tmp"}), std::exception);
}

TEST(RawDisk, AlignedWriteThenReadGoesDirect) {
  TempImage image(kDiskDir, 4 * kMiB);
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  Buffers buf(2 * 65536);
  const auto data = pattern(65536, 3);
  std::memcpy(buf.at(0), data.data(), data.size());
  // Two iovecs, so the vector path is covered.
  const iovec out[] = {{buf.at(0), 32768}, {buf.at(32768), 32768}};
  disk.write(1, kMiB, out);
  ASSERT_TRUE(done.wait_for(1));
  EXPECT_EQ(done.result(1), 65536);

  const iovec in[] = {{buf.at(65536), 65536}};
  disk.read(2, kMiB, in);
  ASSERT_TRUE(done.wait_for(2));
  EXPECT_EQ(done.result(2), 65536);
  EXPECT_EQ(std::memcmp(buf.at(65536), data.data(), data.size()), 0);
  EXPECT_EQ(image.read(kMiB, 65536), data);  // really in the file
  if (disk.direct()) {
    EXPECT_EQ(disk.stats().direct_ops, 2u);
    EXPECT_EQ(disk.stats().buffered_ops, 0u);
  }
  EXPECT_EQ(disk.outstanding(), 0u);
}

TEST(RawDisk, MisalignedBufferFallsBackToTheBufferedDescriptor) {
  TempImage image(kDiskDir, kMiB);
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  Buffers buf(16384);
  const auto data = pattern(4096, 9);
  // One byte off any alignment O_DIRECT could need; 4096 bytes long.
  std::memcpy(buf.at(1), data.data(), data.size());
  const iovec out[] = {{buf.at(1), 4096}};
  disk.write(1, 8192, out);
  // And an offset off the sector grid.
  const iovec in[] = {{buf.at(8192), 100}};
  ASSERT_TRUE(done.wait_for(1));
  disk.read(2, 8192 + 3, in);
  ASSERT_TRUE(done.wait_for(2));
  EXPECT_EQ(done.result(1), 4096);
  EXPECT_EQ(done.result(2), 100);
  EXPECT_EQ(std::memcmp(buf.at(8192), data.data() + 3, 100), 0);
  EXPECT_EQ(image.read(8192, 4096), data);
  if (disk.direct()) {
    EXPECT_EQ(disk.stats().buffered_ops, 2u);
  }
}

TEST(RawDisk, ShortReadAtEndOfFileIsResubmittedThenReported) {
  TempImage image(kDiskDir, 1000);
  image.write(0, pattern(1000, 5));
  RawDisk disk({.path = image.path(), .direct = false});
  Completions done(disk);
  Buffers buf(4096);
  const iovec in[] = {{buf.at(0), 600}, {buf.at(1024), 3000}};
  disk.read(7, 0, in);
  ASSERT_TRUE(done.wait_for(1));
  // 1000 bytes, then a resubmission for the rest that finds the end.
  EXPECT_EQ(done.result(7), 1000);
  EXPECT_GE(disk.stats().resubmissions, 1u);
  const auto data = pattern(1000, 5);
  EXPECT_EQ(std::memcmp(buf.at(0), data.data(), 600), 0);
  EXPECT_EQ(std::memcmp(buf.at(1024), data.data() + 600, 400), 0);
}

TEST(RawDisk, MoreRequestsThanTheRingHoldsWaitAndAllComplete) {
  TempImage image(kDiskDir, 4 * kMiB);
  RawDisk disk({.path = image.path(), .queue_depth = 4});
  Completions done(disk);
  constexpr int kRequests = 64;
  Buffers buf(kRequests * 4096);
  for (int i = 0; i < kRequests; ++i) {
    const auto data = pattern(4096, static_cast<uint8_t>(i));
    std::memcpy(buf.at(i * 4096), data.data(), 4096);
    const iovec out[] = {{buf.at(i * 4096), 4096}};
    disk.write(i, static_cast<uint64_t>(i) * 4096, out);
  }
  EXPECT_EQ(disk.outstanding(), static_cast<size_t>(kRequests));
  EXPECT_GT(disk.stats().queued_when_full, 0u);
  ASSERT_TRUE(done.wait_for(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(done.result(i), 4096) << i;
    EXPECT_EQ(image.read(static_cast<uint64_t>(i) * 4096, 4096),
              pattern(4096, static_cast<uint8_t>(i)))
        << i;
  }
  EXPECT_EQ(disk.outstanding(), 0u);
}

TEST(RawDisk, FlushCompletesAfterTheWritesBeforeIt) {
  TempImage image(kDiskDir, kMiB);
  RawDisk disk({.path = image.path()});
  std::vector<uint64_t> order;
  disk.set_completion_handler([&](uint64_t tag, int64_t result) {
    EXPECT_GE(result, 0) << tag;
    order.push_back(tag);
  });
  Buffers buf(8 * 4096);
  for (int i = 0; i < 8; ++i) {
    const iovec out[] = {{buf.at(i * 4096), 4096}};
    disk.write(i, static_cast<uint64_t>(i) * 4096, out);
  }
  disk.flush(100);
  disk.submit();
  while (order.size() < 9) {
    pollfd pfd{disk.event_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 10000), 1);
    disk.process_completions();
  }
  // IOSQE_IO_DRAIN: the flush is the last to finish.
  EXPECT_EQ(order.back(), 100u);
}

TEST(RawDisk, DiscardPunchesAHole) {
  TempImage image(kDiskDir, 4 * kMiB);
  image.write(0, pattern(4 * kMiB, 1));
  const uint64_t before = image.allocated();
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  disk.discard(1, kMiB, 2 * kMiB);
  ASSERT_TRUE(done.wait_for(1));
  EXPECT_EQ(done.result(1), 0);
  EXPECT_EQ(image.read(kMiB, 2 * kMiB), std::vector<uint8_t>(2 * kMiB, 0));
  const auto data = pattern(4 * kMiB, 1);
  EXPECT_EQ(image.read(0, kMiB), std::vector<uint8_t>(data.begin(), data.begin() + kMiB));
  EXPECT_LE(image.allocated() + 2 * kMiB, before);  // deallocated
  EXPECT_EQ(disk.size(), 4 * kMiB);                 // KEEP_SIZE
}

TEST(RawDisk, WriteZeroesWithoutUnmapKeepsTheBlocks) {
  TempImage image(kDiskDir, 4 * kMiB);
  const auto data = pattern(4 * kMiB, 2);
  image.write(0, data);
  const uint64_t before = image.allocated();
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  disk.write_zeroes(1, kMiB, kMiB, /*may_unmap=*/false);
  disk.write_zeroes(2, 3 * kMiB, kMiB, /*may_unmap=*/true);
  ASSERT_TRUE(done.wait_for(2));
  EXPECT_EQ(done.result(1), 0);
  EXPECT_EQ(done.result(2), 0);
  EXPECT_EQ(image.read(kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
  EXPECT_EQ(image.read(3 * kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
  EXPECT_EQ(image.read(0, kMiB), std::vector<uint8_t>(data.begin(), data.begin() + kMiB));
  EXPECT_EQ(image.read(2 * kMiB, kMiB),
            std::vector<uint8_t>(data.begin() + 2 * kMiB, data.begin() + 3 * kMiB));
  // ZERO_RANGE keeps the first range allocated; the unmapped one is a hole.
  EXPECT_EQ(image.allocated(), before - kMiB);
}

TEST(RawDisk, TmpfsWorksDirectOrBuffered) {
  // tmpfs refuses O_DIRECT on older kernels (buffered descriptor only) and
  // accepts it on newer ones; it has no ZERO_RANGE either way, so
  // write-zeroes without unmap is written out as zeroes.
  TempImage image(kTmpfsDir, 2 * kMiB);
  const auto data = pattern(2 * kMiB, 4);
  image.write(0, data);
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  Buffers buf(3 * 65536);
  const auto fresh = pattern(65536, 8);
  std::memcpy(buf.at(0), fresh.data(), fresh.size());
  const iovec out[] = {{buf.at(0), 65536}};
  disk.write(1, 0, out);
  ASSERT_TRUE(done.wait_for(1));
  const iovec in[] = {{buf.at(65536), 65536}};
  disk.read(2, 0, in);
  disk.write_zeroes(3, 512 * 1024, 512 * 1024 + 4096, /*may_unmap=*/false);
  disk.discard(4, 1536 * 1024, 65536);
  ASSERT_TRUE(done.wait_for(4));
  for (uint64_t tag : {3, 4}) EXPECT_EQ(done.result(tag), 0) << tag;
  EXPECT_GE(disk.stats().resubmissions, 1u);  // ZERO_RANGE refused, zeroes written
  EXPECT_EQ(done.result(1), 65536);
  EXPECT_EQ(done.result(2), 65536);
  EXPECT_EQ(std::memcmp(buf.at(65536), fresh.data(), 65536), 0);
  EXPECT_EQ(image.read(0, 65536), fresh);
  EXPECT_EQ(image.read(512 * 1024, 512 * 1024 + 4096), std::vector<uint8_t>(512 * 1024 + 4096, 0));
  EXPECT_EQ(image.read(1536 * 1024, 65536), std::vector<uint8_t>(65536, 0));
  EXPECT_EQ(image.read(1024 * 1024 + 4096, 4096),
            std::vector<uint8_t>(data.begin() + kMiB + 4096, data.begin() + kMiB + 8192));
}

TEST(RawDisk, BufferedOnlyWhenAsked) {
  TempImage image(kDiskDir, kMiB);
  RawDisk disk({.path = image.path(), .direct = false});
  EXPECT_FALSE(disk.direct());
  Completions done(disk);
  Buffers buf(4096);
  const iovec io[] = {{buf.at(0), 4096}};
  disk.read(1, 0, io);
  ASSERT_TRUE(done.wait_for(1));
  EXPECT_EQ(done.result(1), 4096);
  EXPECT_EQ(disk.stats().direct_ops, 0u);
  EXPECT_EQ(disk.stats().buffered_ops, 1u);
}

TEST(RawDisk, ReadOnlyImageRefusesWrites) {
  TempImage image(kDiskDir, kMiB);
  image.write(0, pattern(4096, 6));
  RawDisk disk({.path = image.path(), .read_only = true});
  EXPECT_TRUE(disk.read_only());
  Completions done(disk);
  Buffers buf(8192);
  const iovec out[] = {{buf.at(0), 4096}};
  disk.write(1, 0, out);
  disk.write_zeroes(2, 0, 4096, false);
  const iovec in[] = {{buf.at(4096), 4096}};
  disk.read(3, 0, in);
  ASSERT_TRUE(done.wait_for(3));
  EXPECT_EQ(done.result(1), -EBADF);
  EXPECT_EQ(done.result(2), -EBADF);
  EXPECT_EQ(done.result(3), 4096);
  EXPECT_EQ(image.read(0, 4096), pattern(4096, 6));
}

TEST(RawDisk, EventFdSignalsCompletionsAndIsClearedByProcessing) {
  TempImage image(kDiskDir, kMiB);
  RawDisk disk({.path = image.path()});
  Completions done(disk);
  pollfd pfd{disk.event_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
  disk.flush(1);
  disk.submit();
  ASSERT_EQ(::poll(&pfd, 1, 10000), 1);
  disk.process_completions();
  EXPECT_EQ(done.result(1), 0);
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
}

TEST(RawDisk, CancelAllWaitsForTheKernelAndReportsNothing) {
  TempImage image(kDiskDir, 8 * kMiB);
  RawDisk disk({.path = image.path(), .queue_depth = 8});
  int reported = 0;
  disk.set_completion_handler([&](uint64_t, int64_t) { ++reported; });
  Buffers buf(8 * kMiB);
  for (int i = 0; i < 32; ++i) {
    const iovec io[] = {{buf.at(i * 256 * 1024), 256 * 1024}};
    disk.read(i, static_cast<uint64_t>(i) * 256 * 1024, io);
  }
  disk.submit();
  EXPECT_TRUE(disk.cancel_all(std::chrono::seconds(10)));
  EXPECT_EQ(disk.outstanding(), 0u);
  disk.process_completions();
  EXPECT_EQ(reported, 0);
}

}  // namespace
}  // namespace keel::storage
