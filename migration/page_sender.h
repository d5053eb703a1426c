// Guest pages onto a migration stream: batches of up to 1 MiB of pages,
// each page's bytes read straight from the guest mapping (gathered, not
// copied), a page of zeros sent as an 8-byte marker, the pace held to a
// bandwidth cap when one is set.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "migration/stream/frame_channel.h"

namespace keel::migration {

class PageSender {
 public:
  // `bandwidth`: bytes per second, 0 for no cap.
  PageSender(FrameChannel& channel, const uint8_t* memory, uint64_t memory_bytes,
             uint64_t bandwidth);

  // Queues page `page`; a full batch goes out at once.
  void add(uint64_t page);
  // Sends what is queued.
  void flush();

  // Every page of memory that holds data (holes of the memory file, never
  // written, are skipped without reading them). `fd` is the memory file.
  void add_all(int fd);
  // Each page whose bit is set in `bitmap` (bit p of word p / 64).
  void add_marked(const std::vector<uint64_t>& bitmap);

  uint64_t pages() const { return pages_; }
  uint64_t zero_pages() const { return zero_pages_; }

  // Checked between batches; true stops the sending with StreamError.
  void set_cancel_check(const std::atomic<bool>* cancelled) { cancelled_ = cancelled; }

 private:
  void pace(uint64_t bytes);

  FrameChannel& channel_;
  const uint8_t* memory_;
  uint64_t memory_pages_;
  uint64_t bandwidth_;
  const std::atomic<bool>* cancelled_ = nullptr;
  std::vector<uint64_t> entries_;
  std::vector<iovec> parts_;
  uint64_t pages_ = 0;
  uint64_t zero_pages_ = 0;
  std::chrono::steady_clock::time_point pace_start_;
  uint64_t paced_bytes_ = 0;
};

// True when the 4096 bytes at `page` are all zero.
bool is_zero_page(const uint8_t* page);

}  // namespace keel::migration
