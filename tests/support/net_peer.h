// The host's side of a guest's network test, from inside a NetNamespace:
// ICMP echo through a raw socket, UDP through ordinary sockets. Every wait
// is bounded and answers-driven (a reply or the deadline), never a sleep.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace keel::testing {

// Sends ICMP echo requests to `ip` until `count` replies came back or
// `deadline` passed (a request is repeated when no reply comes in 200 ms:
// the guest may still be booting). Returns the replies received.
int ping(const std::string& ip, int count, std::chrono::steady_clock::time_point deadline);

class UdpSocket {
 public:
  // Bound to `ip`:`port` (port 0: any), with a receive buffer of `rcvbuf`
  // bytes when non-zero (SO_RCVBUFFORCE: the test runs as root).
  UdpSocket(const std::string& ip, uint16_t port, int rcvbuf = 0);
  void send_to(const std::string& ip, uint16_t port, const std::vector<uint8_t>& payload);
  // One datagram, or an empty vector after `timeout`.
  std::vector<uint8_t> receive(std::chrono::milliseconds timeout);

 private:
  UniqueFd fd_;
};

// rx_packets or tx_packets of DEV in the calling thread's namespace.
uint64_t link_counter(const std::string& dev, const std::string& counter);

}  // namespace keel::testing
