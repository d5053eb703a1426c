// A fuzz input as one client of a Unix socket server (the control socket):
// connect, send the whole input (or what the server takes before it
// closes), half-close, and read everything that comes back until the
// server closes or stays quiet for `quiet_ms`.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/unique_fd.h"
#include "tests/fuzz/fuzz_memory.h"

namespace keel::fuzz {

inline std::string exchange(const std::string& path, const uint8_t* data, size_t size,
                            int quiet_ms) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  FUZZ_CHECK(fd.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size());
  FUZZ_CHECK(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(fd.get(), data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server closed on a bad frame: fine
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd.get(), SHUT_WR);
  std::string got;
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, quiet_ms) <= 0) break;
    char buf[65536];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

}  // namespace keel::fuzz
