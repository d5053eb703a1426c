// Page frames from a stream (stream_format.h) into guest memory: each page
// copied to its place, and runs of zero-page markers punched out of the
// memory file (the page reads zero again and gives its memory back).
#pragma once

#include <cstdint>
#include <span>

#include "common/guest_memory.h"
#include "migration/stream/stream_format.h"

namespace keel::migration {

class PageWriter {
 public:
  // Marks all of `memory` the VMM's once (a write handle) and drops those
  // marks: nobody needs them.
  explicit PageWriter(GuestMemory& memory);

  // One page frame's payload, checked entry by entry (decode_page_batch):
  // on a bad entry the pages before it are written and StreamError thrown.
  PageBatchCounts write(std::span<const uint8_t> payload);

  uint64_t memory_pages() const { return ram_.size() / kPageSize; }

 private:
  void add_zero(uint64_t page);
  void flush_zeros();

  int fd_;
  std::span<uint8_t> ram_;
  uint64_t zero_start_ = 0;
  uint64_t zero_count_ = 0;
};

}  // namespace keel::migration
