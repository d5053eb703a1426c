// One replica checkpoint's pages, copied out of guest memory while the
// guest is stopped (it runs on while they travel, so they cannot be read
// from guest memory then), and sent as page frames (stream_format.h): a
// page of zeros as a marker, the rest gathered from the copy. A disk's
// blocks the same way, read from its image, sent as disk block frames. The
// buffers are kept from one epoch to the next: a steady guest allocates
// nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "migration/stream/frame_channel.h"

namespace keel::migration {

class EpochPages {
 public:
  // Replaces what was staged by each page marked in `bitmap` (bit p of
  // word p / 64), read from `memory` (`memory_pages` pages long).
  void stage(const uint8_t* memory, uint64_t memory_pages, const std::vector<uint64_t>& bitmap);
  // The same for 4 KiB blocks of the image file `fd` (`blocks` long),
  // read with pread (throws with errno on a failed or short read).
  void stage_file(int fd, uint64_t blocks, const std::vector<uint64_t>& bitmap);
  // The staged pages as page frames of at most 256 entries; with `disk`,
  // as that disk's block frames.
  void send(FrameChannel& channel, std::optional<uint64_t> disk = std::nullopt) const;

  uint64_t pages() const { return data_.size() / kPageSize; }
  uint64_t zero_pages() const { return entries_.size() - pages(); }
  uint64_t bytes() const { return data_.size() + entries_.size() * 8; }

 private:
  template <typename Copy>
  void stage_marked(uint64_t pages, const std::vector<uint64_t>& bitmap, Copy copy);

  std::vector<uint64_t> entries_;  // encoded page entries, in order
  std::vector<uint8_t> data_;      // the non-zero pages' bytes, in entry order
};

}  // namespace keel::migration
