#include "migration/epoch_pages.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/error.h"
#include "migration/page_sender.h"

namespace keel::migration {

namespace {
constexpr size_t kBatchPages = 256;  // as PageSender's: 1 MiB of data per frame at most
}

template <typename Copy>
void EpochPages::stage_marked(uint64_t pages, const std::vector<uint64_t>& bitmap, Copy copy) {
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
      if (page >= pages) throw std::out_of_range("dirty page beyond the end");
      const size_t at = data_.size();
      data_.resize(at + kPageSize);
      copy(page, data_.data() + at);
      const bool zero = is_zero_page(data_.data() + at);
      if (zero) data_.resize(at);
      entries_.push_back(encode_page_entry(page, zero));
    }
  }
}

void EpochPages::stage(const uint8_t* memory, uint64_t memory_pages,
                       const std::vector<uint64_t>& bitmap) {
  stage_marked(memory_pages, bitmap, [memory](uint64_t page, uint8_t* into) {
    std::memcpy(into, memory + page * kPageSize, kPageSize);
  });
}

void EpochPages::stage_file(int fd, uint64_t blocks, const std::vector<uint64_t>& bitmap) {
  stage_marked(blocks, bitmap, [fd](uint64_t block, uint8_t* into) {
    size_t done = 0;
    while (done < kPageSize) {
      const ssize_t n =
          ::pread(fd, into + done, kPageSize - done, static_cast<off_t>(block * kPageSize + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("reading a written disk block back");
      if (n == 0) throw std::runtime_error("disk image shorter than the disk");
      done += static_cast<size_t>(n);
    }
  });
}

void EpochPages::send(FrameChannel& channel, std::optional<uint64_t> disk) const {
  std::vector<iovec> parts;
  parts.reserve(kBatchPages * 2 + 1);
  size_t next_data = 0;
  uint64_t disk_word = disk.value_or(0);  // little-endian on x86, as the wire wants
  for (size_t first = 0; first < entries_.size(); first += kBatchPages) {
    parts.clear();
    if (disk) parts.push_back({&disk_word, 8});
    const size_t end = std::min(entries_.size(), first + kBatchPages);
    for (size_t i = first; i < end; ++i) {
      parts.push_back({const_cast<uint64_t*>(&entries_[i]), 8});
      if ((entries_[i] & kZeroPageBit) == 0) {
        parts.push_back({const_cast<uint8_t*>(data_.data() + next_data), kPageSize});
        next_data += kPageSize;
      }
    }
    channel.send_gathered(disk ? FrameType::kDiskBlocks : FrameType::kPages, parts);
  }
}

}  // namespace keel::migration
