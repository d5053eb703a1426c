#include "migration/stream/epoch_assembler.h"

#include "proto/migration.pb.h"

namespace keel::migration {

void EpochAssembler::keep(FrameType type, std::span<const uint8_t> payload) {
  uint64_t limit = 4 * memory_pages_ * kPageSize;
  for (uint64_t blocks : disk_blocks_) limit += blocks * kPageSize;
  if (kept_bytes_ + payload.size() > limit) {
    throw StreamError("an epoch of more than " + std::to_string(limit >> 20) +
                      " MiB (four times memory and the disks once)");
  }
  kept_bytes_ += payload.size();
  if (frames_ == kept_.size()) kept_.emplace_back();
  kept_[frames_].type = type;
  kept_[frames_].bytes.assign(payload.begin(), payload.end());
  ++frames_;
}

void EpochAssembler::add_pages(std::span<const uint8_t> payload, const WriteNow& write_now) {
  if (handed_over_ != 0) throw StreamError("pages before the last epoch was applied");
  PageBatchCounts counts;
  if (last_epoch_ == 0) {
    counts = write_now(payload);
  } else {
    counts = decode_page_batch(payload, memory_pages_, [](uint64_t, const uint8_t*) {});
    keep(FrameType::kPages, payload);
  }
  pages_ += counts.pages;
  zeros_ += counts.zero_pages;
}

void EpochAssembler::add_disk_blocks(std::span<const uint8_t> payload, const WriteNow& write_now) {
  if (handed_over_ != 0) throw StreamError("disk blocks before the last epoch was applied");
  const DiskBlocks blocks = split_disk_blocks(payload, disk_blocks_.size());
  if (disk_blocks_[blocks.disk] == 0)
    throw StreamError("disk blocks for disk " + std::to_string(blocks.disk) + ", not replicated");
  PageBatchCounts counts;
  if (last_epoch_ == 0) {
    counts = write_now(payload);
  } else {
    counts =
        decode_page_batch(blocks.batch, disk_blocks_[blocks.disk], [](uint64_t, const uint8_t*) {});
    keep(FrameType::kDiskBlocks, payload);
  }
  blocks_ += counts.pages;
  zero_blocks_ += counts.zero_pages;
}

void EpochAssembler::end_first_copy() {
  if (last_epoch_ != 0 || state_) throw StreamError("sync after the first epoch began");
  pages_ = 0;
  zeros_ = 0;
  blocks_ = 0;
  zero_blocks_ = 0;
}

const state::v1::VmState& EpochAssembler::add_state(std::span<const uint8_t> payload) {
  if (state_) throw StreamError("a second state in one epoch");
  state::v1::VmState state;
  if (!state.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    throw StreamError("state frame does not parse");
  state_ = std::move(state);
  return *state_;
}

EpochAssembler::Epoch EpochAssembler::complete(std::span<const uint8_t> payload) {
  if (handed_over_ != 0) throw StreamError("an epoch before the last one was applied");
  migration::v1::Epoch end;
  if (!end.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    throw StreamError("epoch frame does not parse");
  if (end.epoch() != last_epoch_ + 1) {
    throw StreamError("epoch " + std::to_string(end.epoch()) + " after epoch " +
                      std::to_string(last_epoch_));
  }
  if (end.pages() != pages_ || end.zero_pages() != zeros_) {
    throw StreamError("epoch " + std::to_string(end.epoch()) + " announced " +
                      std::to_string(end.pages()) + "+" + std::to_string(end.zero_pages()) +
                      " pages, " + std::to_string(pages_) + "+" + std::to_string(zeros_) +
                      " arrived");
  }
  if (end.disk_blocks() != blocks_ || end.zero_disk_blocks() != zero_blocks_) {
    throw StreamError("epoch " + std::to_string(end.epoch()) + " announced " +
                      std::to_string(end.disk_blocks()) + "+" +
                      std::to_string(end.zero_disk_blocks()) + " disk blocks, " +
                      std::to_string(blocks_) + "+" + std::to_string(zero_blocks_) + " arrived");
  }
  if (!state_) throw StreamError("epoch " + std::to_string(end.epoch()) + " without a state");
  Epoch epoch;
  epoch.number = end.epoch();
  epoch.length_us = end.length_us();
  epoch.last = end.last();
  epoch.pages = pages_ + zeros_;
  epoch.disk_blocks = blocks_ + zero_blocks_;
  epoch.frames = std::span<const Frame>(kept_.data(), frames_);
  epoch.state = std::move(*state_);
  state_.reset();
  handed_over_ = epoch.number;
  return epoch;
}

void EpochAssembler::committed() {
  if (handed_over_ == 0) return;
  last_epoch_ = handed_over_;
  handed_over_ = 0;
  frames_ = 0;
  kept_bytes_ = 0;
  pages_ = 0;
  zeros_ = 0;
  blocks_ = 0;
  zero_blocks_ = 0;
}

}  // namespace keel::migration
