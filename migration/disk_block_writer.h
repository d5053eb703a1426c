// A passive's copy of a replicated disk: disk block frames (stream_format.h)
// written into its own image file, a block of zeros punched out (it reads
// zero again and gives its space back). The file must be as large as the
// active's disk: checked when it is opened.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/unique_fd.h"
#include "migration/stream/stream_format.h"

namespace keel::migration {

class DiskBlockWriter {
 public:
  // Opens `path` for writing; InputError naming it when it cannot be, or
  // when its size is not `bytes` (the active's).
  DiskBlockWriter(const std::string& path, uint64_t bytes);

  uint64_t blocks() const { return blocks_; }
  // One frame's entries (already split from its disk index), checked entry
  // by entry: on a bad one the blocks before it are written and
  // StreamError thrown.
  PageBatchCounts write(std::span<const uint8_t> batch);

 private:
  std::string path_;
  UniqueFd fd_;
  uint64_t blocks_;
};

}  // namespace keel::migration
