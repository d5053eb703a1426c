#include "devices/virtio/net/held_output.h"

#include <cstring>

namespace keel::virtio {

void HeldOutput::add(std::span<const iovec> parts, size_t bytes) {
  Frame frame{kOpen, {}};
  frame.bytes.resize(bytes);
  size_t at = 0;
  for (const iovec& part : parts) {
    const size_t n = std::min(part.iov_len, bytes - at);
    std::memcpy(frame.bytes.data() + at, part.iov_base, n);
    at += n;
  }
  frame.bytes.resize(at);
  bytes_ += at;
  frames_.push_back(std::move(frame));
}

void HeldOutput::close_epoch(uint64_t epoch) {
  // The open frames are the newest: walk back until a closed one.
  for (auto it = frames_.rbegin(); it != frames_.rend() && it->epoch == kOpen; ++it)
    it->epoch = epoch;
}

size_t HeldOutput::release(uint64_t epoch,
                           const std::function<bool(std::span<const uint8_t>)>& send) {
  if (epoch > released_) released_ = epoch;
  size_t sent = 0;
  while (!frames_.empty() && frames_.front().epoch <= released_) {
    if (!send(frames_.front().bytes)) break;
    bytes_ -= frames_.front().bytes.size();
    frames_.pop_front();
    ++sent;
  }
  return sent;
}

size_t HeldOutput::release_all(const std::function<bool(std::span<const uint8_t>)>& send) {
  for (Frame& frame : frames_) frame.epoch = 0;
  return release(0, send);
}

void HeldOutput::restart() {
  for (Frame& frame : frames_) frame.epoch = 0;
  released_ = 0;
}

void HeldOutput::clear() {
  frames_.clear();
  bytes_ = 0;
}

}  // namespace keel::virtio
