#include "migration/epoch_pages.h"

#include <bit>
#include <cstring>

#include "migration/page_sender.h"

namespace keel::migration {

namespace {
constexpr size_t kBatchPages = 256;  // as PageSender's: 1 MiB of data per frame at most
}

void EpochPages::stage(const uint8_t* memory, uint64_t memory_pages,
                       const std::vector<uint64_t>& bitmap) {
  entries_.clear();
  data_.clear();
  uint64_t marked = 0;
  for (uint64_t w : bitmap) marked += static_cast<uint64_t>(std::popcount(w));
  entries_.reserve(marked);
  data_.reserve(marked * kPageSize);  // at most; capacity stays for the next epoch
  for (size_t w = 0; w < bitmap.size(); ++w) {
    uint64_t bits = bitmap[w];
    while (bits != 0) {
      const uint64_t page = w * 64 + static_cast<uint64_t>(std::countr_zero(bits));
      bits &= bits - 1;
      if (page >= memory_pages) throw std::out_of_range("dirty page beyond guest memory");
      const uint8_t* at = memory + page * kPageSize;
      const bool zero = is_zero_page(at);
      entries_.push_back(encode_page_entry(page, zero));
      if (!zero) data_.insert(data_.end(), at, at + kPageSize);
    }
  }
}

void EpochPages::send(FrameChannel& channel) const {
  std::vector<iovec> parts;
  parts.reserve(kBatchPages * 2);
  size_t next_data = 0;
  for (size_t first = 0; first < entries_.size(); first += kBatchPages) {
    parts.clear();
    const size_t end = std::min(entries_.size(), first + kBatchPages);
    for (size_t i = first; i < end; ++i) {
      parts.push_back({const_cast<uint64_t*>(&entries_[i]), 8});
      if ((entries_[i] & kZeroPageBit) == 0) {
        parts.push_back({const_cast<uint8_t*>(data_.data() + next_data), kPageSize});
        next_data += kPageSize;
      }
    }
    channel.send_gathered(FrameType::kPages, parts);
  }
}

}  // namespace keel::migration
