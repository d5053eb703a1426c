#include "control/stream_frames.h"

#include <sys/socket.h>

#include <cerrno>

#include "control/control_client.h"
#include "control/control_frame.h"

namespace keel {

bool StreamFrames::read(int fd) {
  if (at_ > 0) {
    in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(at_));
    at_ = 0;
  }
  // Never more than one whole frame's worth held: the caller's next()
  // takes frames (or refuses one too long) before more is read.
  while (in_.size() < kControlFrameHeaderBytes + kControlMaxFrameBytes) {
    uint8_t chunk[65536];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      in_.insert(in_.end(), chunk, chunk + n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;  // else the end, or a reset
  }
  return true;
}

bool StreamFrames::next(google::protobuf::MessageLite& message) {
  using Kind = ControlClientError::Kind;
  if (in_.size() - at_ < kControlFrameHeaderBytes) return false;
  const uint32_t length = decode_control_frame_length({in_.data() + at_, in_.size() - at_});
  if (length > kControlMaxFrameBytes) {
    throw ControlClientError(
        Kind::kProtocol, source_ + " sent a " + what_ + " of " + std::to_string(length) + " bytes");
  }
  if (in_.size() - at_ < kControlFrameHeaderBytes + length) return false;
  if (!message.ParseFromArray(in_.data() + at_ + kControlFrameHeaderBytes,
                              static_cast<int>(length))) {
    throw ControlClientError(Kind::kProtocol, source_ + " sent a malformed " + what_);
  }
  at_ += kControlFrameHeaderBytes + length;
  return true;
}

}  // namespace keel
