#include "migration/page_writer.h"

#include <fcntl.h>

#include <cstring>

#include "common/error.h"

namespace keel::migration {

PageWriter::PageWriter(GuestMemory& memory) : fd_(memory.fd()), ram_(memory.host_all_for_write()) {
  memory.dirty().harvest();
}

PageBatchCounts PageWriter::write(std::span<const uint8_t> payload) {
  PageBatchCounts counts;
  try {
    counts = decode_page_batch(payload, memory_pages(), [&](uint64_t page, const uint8_t* data) {
      if (data == nullptr) return add_zero(page);
      std::memcpy(ram_.data() + page * kPageSize, data, kPageSize);
    });
  } catch (...) {
    try {
      flush_zeros();
    } catch (...) {
    }
    throw;
  }
  flush_zeros();
  return counts;
}

void PageWriter::add_zero(uint64_t page) {
  if (zero_count_ != 0 && page == zero_start_ + zero_count_) {
    ++zero_count_;
    return;
  }
  flush_zeros();
  zero_start_ = page;
  zero_count_ = 1;
}

void PageWriter::flush_zeros() {
  if (zero_count_ == 0) return;
  const uint64_t start = zero_start_;
  const uint64_t count = zero_count_;
  zero_count_ = 0;
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(start * kPageSize),
                  static_cast<off_t>(count * kPageSize)) != 0) {
    throw_errno("zeroing guest pages");
  }
}

}  // namespace keel::migration
