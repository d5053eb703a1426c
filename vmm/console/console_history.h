// The guest console's history: the newest bytes COM1 printed, addressed by
// their offset since the VM booted (kept across snapshot/restore and
// migration, so offsets keep counting). Bounded: appending past the
// capacity forgets the oldest bytes, and a reader asking for an offset
// already forgotten learns how much it missed. Not thread-safe: its owner
// (GuestConsole) serialises access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace keel {

class ConsoleHistory {
 public:
  explicit ConsoleHistory(size_t capacity);

  void append(std::span<const uint8_t> bytes);
  // Offsets of the oldest byte kept and one past the newest.
  uint64_t start() const { return end_ - size_; }
  uint64_t end() const { return end_; }
  size_t capacity() const { return ring_.size(); }

  // At most `max` bytes from `offset` on, appended to `out`. An offset
  // already forgotten reads from start(); one past end() reads nothing.
  // Returns the offset the bytes begin at.
  uint64_t read(uint64_t offset, size_t max, std::string& out) const;

  // Everything kept, oldest first (a snapshot's copy).
  std::string contents() const;
  // Replaces the history with `bytes` ending at offset `end` (a restored
  // state): only the newest capacity() bytes are kept. `end` must be at
  // least bytes.size() (the caller validates untrusted input).
  void assign(uint64_t end, std::span<const uint8_t> bytes);

 private:
  std::vector<uint8_t> ring_;
  size_t size_ = 0;   // bytes kept, at most ring_.size()
  uint64_t end_ = 0;  // offset one past the newest byte; it sits at end_ % capacity
};

}  // namespace keel
