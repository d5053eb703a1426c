// Which pages of guest memory the VMM wrote, one bit per 4 KiB page indexed
// by the page's offset in the guest memory file (the memfd), the index KVM's
// dirty log uses too once its slots are laid over that file. KVM sees only
// the guest's own writes; everything a device writes is marked here.
//
// Marks are atomic and lock-free: vCPU threads, the event loop and I/O
// completions mark concurrently. A harvest takes the marks word by word
// (exchange with zero), so a mark racing a harvest lands in this harvest or
// the next, never in neither. A mark must follow the write it stands for
// (release; a harvest acquires): whoever copies a harvested page then sees
// the data the mark stood for.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace keel {

class DirtyBitmap {
 public:
  static constexpr uint64_t kPageSize = 4096;

  // A bitmap for `bytes` of memory (rounded up to whole pages), all clear.
  explicit DirtyBitmap(uint64_t bytes);

  uint64_t pages() const { return pages_; }
  size_t words() const { return words_count_; }

  // Marks every page [offset, offset + length) touches. Throws
  // std::out_of_range past the end (callers checked the range already: a
  // throw here is a VMM bug, not guest input).
  void mark(uint64_t offset, uint64_t length);
  bool is_marked(uint64_t page) const;
  uint64_t count() const;

  // Takes every mark and leaves the bitmap clear: bit p of word p / 64.
  std::vector<uint64_t> harvest();
  // The same, ORed into `into` (resized to words() if smaller).
  void harvest_into(std::vector<uint64_t>& into);

 private:
  uint64_t pages_;
  size_t words_count_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace keel
