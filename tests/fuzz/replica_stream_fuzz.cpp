// libFuzzer target: a replica stream as a passive reads it (migration/
// stream: FrameChannel, EpochAssembler). The input is the bytes an active
// sends; they go down a socket pair to a FrameChannel; page frames, states
// and epoch ends go to an EpochAssembler over a small guest memory, as
// ReplicaReceiver hands them (pages and disk blocks written at once before
// the first epoch, else at an epoch's end; disk 0 read-only, disk 1 of 32
// blocks). Anything wrong must be a StreamError or
// an InputError; never a crash, a write outside memory, or a hang; and
// once an epoch was applied, memory and disk change only when another one
// is: when the stream ends, they are what the last applied epoch left.
//
// Seeds (tests/fuzz/corpus/replica_stream_fuzz, make_seeds.py): a first
// copy and two epochs, one epoch cut short, epochs out of order.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"
#include "migration/stream/epoch_assembler.h"
#include "migration/stream/frame_channel.h"
#include "tests/fuzz/fuzz_memory.h"
#include "tests/fuzz/fuzz_stream.h"

using namespace keel;
using namespace keel::migration;

namespace {
constexpr uint64_t kMemoryPages = 64;
constexpr uint64_t kDiskBlocks = 32;

PageBatchCounts write_pages(std::vector<uint8_t>& memory, std::span<const uint8_t> payload) {
  return decode_page_batch(payload, kMemoryPages, [&](uint64_t page, const uint8_t* bytes) {
    FUZZ_CHECK(page < kMemoryPages);
    if (bytes == nullptr) {
      std::memset(memory.data() + page * kPageSize, 0, kPageSize);
    } else {
      FUZZ_CHECK(bytes >= payload.data() && bytes + kPageSize <= payload.data() + payload.size());
      std::memcpy(memory.data() + page * kPageSize, bytes, kPageSize);
    }
  });
}
PageBatchCounts write_blocks(std::vector<uint8_t>& disk, std::span<const uint8_t> payload) {
  const DiskBlocks blocks = split_disk_blocks(payload, 2);
  FUZZ_CHECK(blocks.disk == 1);
  return decode_page_batch(blocks.batch, kDiskBlocks, [&](uint64_t block, const uint8_t* bytes) {
    FUZZ_CHECK(block < kDiskBlocks);
    if (bytes == nullptr) {
      std::memset(disk.data() + block * kPageSize, 0, kPageSize);
    } else {
      std::memcpy(disk.data() + block * kPageSize, bytes, kPageSize);
    }
  });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<FrameChannel> stream = fuzz::stream_of(data, size);
  if (!stream) return 0;
  FrameChannel& channel = *stream;

  std::vector<uint8_t> memory(kMemoryPages * kPageSize);
  std::vector<uint8_t> disk(kDiskBlocks * kPageSize);  // disk 1; disk 0 is read-only
  std::vector<uint8_t> applied;                        // memory as the last epoch left it
  std::vector<uint8_t> applied_disk;                   // and the disk
  EpochAssembler epochs(kMemoryPages, {0, kDiskBlocks});
  const auto write_now = [&memory](std::span<const uint8_t> payload) {
    return write_pages(memory, payload);
  };
  const auto write_blocks_now = [&disk](std::span<const uint8_t> payload) {
    return write_blocks(disk, payload);
  };
  try {
    channel.expect_magic();
    for (;;) {
      FrameChannel::Frame frame = channel.receive();
      switch (frame.type) {
        case FrameType::kPages:
          epochs.add_pages(frame.payload, write_now);
          break;
        case FrameType::kDiskBlocks:
          epochs.add_disk_blocks(frame.payload, write_blocks_now);
          break;
        case FrameType::kSync:
          epochs.end_first_copy();
          break;
        case FrameType::kState:
          epochs.add_state(frame.payload);
          break;
        case FrameType::kEpoch: {
          EpochAssembler::Epoch epoch = epochs.complete(frame.payload);
          FUZZ_CHECK(epoch.number == epochs.last_epoch() + 1);
          FUZZ_CHECK(epoch.number == 1 || !applied.empty());
          for (const auto& kept : epoch.frames) {
            if (kept.type == FrameType::kPages) {
              write_pages(memory, kept.bytes);
            } else {
              FUZZ_CHECK(kept.type == FrameType::kDiskBlocks);
              write_blocks(disk, kept.bytes);
            }
          }
          epochs.committed();
          applied = memory;
          applied_disk = disk;
          break;
        }
        case FrameType::kKeepalive:
          // As the passive: anywhere, never with a payload.
          if (!frame.payload.empty()) throw StreamError("keepalive frame with a payload");
          break;
        default:
          break;
      }
    }
  } catch (const InputError&) {
    // StreamError is one: the stream refused, as it must be.
  }
  if (epochs.last_epoch() != 0) FUZZ_CHECK(memory == applied && disk == applied_disk);
  return 0;
}
