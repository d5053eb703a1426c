#include "migration/page_sender.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <thread>

#include "common/error.h"

namespace keel::migration {

namespace {
constexpr size_t kBatchPages = 256;  // 1 MiB of data per frame at most
}

bool is_zero_page(const uint8_t* page) {
  uint64_t words[kPageSize / 8];
  std::memcpy(words, page, kPageSize);  // guest memory changes under us: read it once
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  return any == 0;
}

PageSender::PageSender(FrameChannel& channel, const uint8_t* memory, uint64_t memory_bytes,
                       uint64_t bandwidth)
    : channel_(channel),
      memory_(memory),
      memory_pages_(memory_bytes / kPageSize),
      bandwidth_(bandwidth),
      pace_start_(std::chrono::steady_clock::now()) {
  entries_.reserve(kBatchPages);
  parts_.reserve(kBatchPages * 2);
}

void PageSender::add(uint64_t page) {
  if (page >= memory_pages_) throw std::out_of_range("page beyond guest memory");
  const uint8_t* data = memory_ + page * kPageSize;
  const bool zero = is_zero_page(data);
  entries_.push_back(encode_page_entry(page, zero));
  // The entry's word lives in entries_, which never reallocates before a
  // flush (reserved for a whole batch).
  parts_.push_back({&entries_.back(), 8});
  if (!zero) parts_.push_back({const_cast<uint8_t*>(data), kPageSize});
  ++(zero ? zero_pages_ : pages_);
  if (entries_.size() == kBatchPages) flush();
}

void PageSender::flush() {
  if (entries_.empty()) return;
  if (cancelled_ && cancelled_->load()) throw StreamError("cancelled");
  uint64_t bytes = 8;
  for (const iovec& p : parts_) bytes += p.iov_len;
  channel_.send_gathered(FrameType::kPages, parts_);
  entries_.clear();
  parts_.clear();
  pace(bytes);
}

void PageSender::pace(uint64_t bytes) {
  if (bandwidth_ == 0) return;
  paced_bytes_ += bytes;
  const auto due = pace_start_ + std::chrono::microseconds(paced_bytes_ * 1000000 / bandwidth_);
  std::this_thread::sleep_until(due);
}

void PageSender::add_all(int fd) {
  const uint64_t size = memory_pages_ * kPageSize;
  off_t at = 0;
  while (static_cast<uint64_t>(at) < size) {
    off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // nothing but holes from here
      throw_errno("SEEK_DATA in guest memory");
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw_errno("SEEK_HOLE in guest memory");
    const uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    for (uint64_t p = static_cast<uint64_t>(data) / kPageSize; p * kPageSize < end; ++p) add(p);
    at = hole;
  }
  flush();
}

void PageSender::add_marked(const std::vector<uint64_t>& bitmap) {
  for (size_t w = 0; w < bitmap.size(); ++w) {
    uint64_t bits = bitmap[w];
    while (bits != 0) {
      const int b = std::countr_zero(bits);
      bits &= bits - 1;
      add(w * 64 + static_cast<uint64_t>(b));
    }
  }
  flush();
}

}  // namespace keel::migration
