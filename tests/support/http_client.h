// An HTTP/1.1 exchange for tests of keel-agent's /metrics: the request sent
// whole, the answer read until the server closes (at most `wait` quiet).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "common/tcp_endpoint.h"
#include "common/unique_fd.h"

namespace keel::testing {

// `address`: "ADDR:PORT".
inline std::string http_exchange(const std::string& address, const std::string& request,
                                 std::chrono::milliseconds wait = std::chrono::seconds(30)) {
  UniqueFd fd =
      connect_tcp(parse_tcp_endpoint("tcp:" + address, "HTTP server"), std::chrono::seconds(10));
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string got;
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) break;
    char buf[65536];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

}  // namespace keel::testing
