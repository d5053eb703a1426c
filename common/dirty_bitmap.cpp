#include "common/dirty_bitmap.h"

#include <bit>
#include <stdexcept>
#include <string>

namespace keel {

DirtyBitmap::DirtyBitmap(uint64_t bytes)
    : pages_((bytes + kPageSize - 1) / kPageSize),
      words_count_(static_cast<size_t>((pages_ + 63) / 64)),
      words_(std::make_unique<std::atomic<uint64_t>[]>(words_count_)) {
  for (size_t i = 0; i < words_count_; ++i) words_[i].store(0, std::memory_order_relaxed);
}

void DirtyBitmap::mark(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  const uint64_t first = offset / kPageSize;
  if (offset + length < offset || (offset + length - 1) / kPageSize >= pages_) {
    throw std::out_of_range("dirty bitmap: " + std::to_string(length) + " bytes at offset " +
                            std::to_string(offset) + " pass its " + std::to_string(pages_) +
                            " pages");
  }
  const uint64_t last = (offset + length - 1) / kPageSize;
  for (uint64_t page = first; page <= last;) {
    const uint64_t word = page / 64, bit = page % 64;
    const uint64_t in_word = std::min<uint64_t>(64 - bit, last - page + 1);
    const uint64_t mask = (in_word == 64 ? ~uint64_t{0} : ((uint64_t{1} << in_word) - 1)) << bit;
    words_[word].fetch_or(mask, std::memory_order_release);
    page += in_word;
  }
}

bool DirtyBitmap::is_marked(uint64_t page) const {
  if (page >= pages_) return false;
  return (words_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
}

uint64_t DirtyBitmap::count() const {
  uint64_t n = 0;
  for (size_t i = 0; i < words_count_; ++i)
    n += std::popcount(words_[i].load(std::memory_order_relaxed));
  return n;
}

std::vector<uint64_t> DirtyBitmap::harvest() {
  std::vector<uint64_t> out(words_count_, 0);
  harvest_into(out);
  return out;
}

void DirtyBitmap::harvest_into(std::vector<uint64_t>& into) {
  if (into.size() < words_count_) into.resize(words_count_, 0);
  for (size_t i = 0; i < words_count_; ++i) {
    // Skip the store for clean words: most are, between two harvests.
    if (words_[i].load(std::memory_order_relaxed) == 0) continue;
    into[i] |= words_[i].exchange(0, std::memory_order_acquire);
  }
}

}  // namespace keel
