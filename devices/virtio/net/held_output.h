// HA output commit (DESIGN.md: the VMM holds the guest's network output
// until the passive acknowledged the epoch): the frames a guest sends while
// its VMM replicates, copied out of its buffers and kept in order, each
// tagged with the epoch it was sent in, until that epoch is acknowledged.
// Bounded: when full, the device stops taking frames from the guest (the
// transmit queue backs up, as on a slow link) until a release makes room.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <vector>

namespace keel::virtio {

class HeldOutput {
 public:
  explicit HeldOutput(size_t limit_bytes) : limit_(limit_bytes) {}

  // A frame of `bytes` fits now (an empty store takes any one frame).
  bool has_room(size_t bytes) const { return frames_.empty() || bytes_ + bytes <= limit_; }
  // Copies the frame gathered in `parts` (`bytes` long) into the epoch
  // under way.
  void add(std::span<const iovec> parts, size_t bytes);
  // The epoch under way is `epoch` and has ended: what was added so far
  // belongs to it (or to an earlier one).
  void close_epoch(uint64_t epoch);
  // Frames of epochs up to `epoch` may leave: each is handed to `send` in
  // order and dropped once it returns true; false (the host cannot take it
  // now) stops here, to go on with another release call. Returns the
  // frames sent.
  size_t release(uint64_t epoch, const std::function<bool(std::span<const uint8_t>)>& send);
  // Every frame, the epoch under way's too (replication ended: the guest
  // runs unprotected, its output as it was).
  size_t release_all(const std::function<bool(std::span<const uint8_t>)>& send);
  void clear();
  // A new replication's epochs start again at 1: nothing released yet
  // (frames still held from before stay due).
  void restart();

  size_t frames() const { return frames_.size(); }
  size_t bytes() const { return bytes_; }

 private:
  static constexpr uint64_t kOpen = UINT64_MAX;  // sent in the epoch under way
  struct Frame {
    uint64_t epoch;
    std::vector<uint8_t> bytes;
  };
  size_t limit_;
  size_t bytes_ = 0;
  uint64_t released_ = 0;  // epochs up to this one may leave
  std::deque<Frame> frames_;
};

}  // namespace keel::virtio
