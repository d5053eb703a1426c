// The passive's half of a replica stream's epochs (stream_format.h), apart
// from the machine so that the fuzz build takes it: page frames before the
// first epoch is complete go straight to memory (there is no copy to keep
// whole yet), and so do disk block frames; after it each page or disk block
// frame is checked and kept, the State kept as parsed, and an Epoch frame
// hands them over only when its number follows the last one's and its
// counts match what arrived. A half-received epoch is never handed over.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "migration/stream/stream_format.h"
#include "proto/vm_state.pb.h"

namespace keel::migration {

class EpochAssembler {
 public:
  // `disk_blocks`: each disk's size in 4 KiB blocks, in the
  // configuration's order (0: not replicated, refused in the stream). An
  // epoch may keep at most four times the memory and the disks' blocks
  // once (this version's active sends each page once at most in an epoch;
  // the one before pre-copied a switchover's last epoch, up to three times
  // memory): more is refused (StreamError), never buffered without bound.
  explicit EpochAssembler(uint64_t memory_pages, std::vector<uint64_t> disk_blocks = {})
      : memory_pages_(memory_pages), disk_blocks_(std::move(disk_blocks)) {}

  // A page frame. Before the first epoch: `write_now` writes it into memory
  // (and returns its counts); from then on it is checked (StreamError) and
  // kept for the epoch's end.
  using WriteNow = std::function<PageBatchCounts(std::span<const uint8_t>)>;
  void add_pages(std::span<const uint8_t> payload, const WriteNow& write_now);
  // A disk block frame (split_disk_blocks), the same way: `write_now` gets
  // the whole payload.
  void add_disk_blocks(std::span<const uint8_t> payload, const WriteNow& write_now);
  // The end of the first copy of all memory (a Sync before any epoch):
  // its pages are not part of the first epoch's counts.
  void end_first_copy();
  // A State frame (StreamError when it does not parse, or when a second
  // comes in one epoch). The caller checks it fits its machine.
  const state::v1::VmState& add_state(std::span<const uint8_t> payload);

  // An Epoch frame closing what came since the last one. Throws StreamError
  // for an epoch out of order, counts that differ from what arrived or a
  // missing state: nothing of this epoch is handed over then.
  struct Frame {
    FrameType type;  // kPages or kDiskBlocks
    std::vector<uint8_t> bytes;
  };
  struct Epoch {
    uint64_t number = 0;
    uint64_t length_us = 0;
    uint64_t pages = 0;        // entries, zeros included
    uint64_t disk_blocks = 0;  // the same
    bool last = false;         // a switchover's (Epoch.last)
    // Its page and disk block frames in order, each checked; empty for the
    // first epoch (written as they came).
    std::span<const Frame> frames;
    state::v1::VmState state;
  };
  Epoch complete(std::span<const uint8_t> payload);
  // Once the caller applied what complete() handed over.
  void committed();

  uint64_t last_epoch() const { return last_epoch_; }
  // Something of an epoch arrived since the last one completed.
  bool mid_epoch() const {
    return frames_ != 0 || state_.has_value() || pages_ + zeros_ + blocks_ + zero_blocks_ != 0;
  }

 private:
  void keep(FrameType type, std::span<const uint8_t> payload);

  const uint64_t memory_pages_;
  const std::vector<uint64_t> disk_blocks_;
  uint64_t last_epoch_ = 0;
  uint64_t handed_over_ = 0;  // complete() returned it; committed() not yet called
  std::vector<Frame> kept_;   // buffers kept from epoch to epoch
  size_t frames_ = 0;
  uint64_t pages_ = 0;
  uint64_t zeros_ = 0;
  uint64_t blocks_ = 0;
  uint64_t zero_blocks_ = 0;
  uint64_t kept_bytes_ = 0;
  std::optional<state::v1::VmState> state_;
};

}  // namespace keel::migration
