// A fuzz input as the receiving end of a migration or replica stream: the
// whole input written into a socket pair, then the writing end closed, so
// the reader never waits on bytes that will not come (the channel's
// timeout is its guard anyway).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "migration/stream/frame_channel.h"

namespace keel::fuzz {

// Null when no socket pair could be made.
inline std::unique_ptr<migration::FrameChannel> stream_of(const uint8_t* data, size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return nullptr;
  int buffer = 1 << 20;
  ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  size_t at = 0;
  while (at < size) {
    ssize_t n = ::send(fds[0], data + at, size - at, MSG_NOSIGNAL);
    if (n <= 0) break;
    at += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  return std::make_unique<migration::FrameChannel>(UniqueFd(fds[1]), "the fuzzer",
                                                   std::chrono::milliseconds(1000));
}

}  // namespace keel::fuzz
