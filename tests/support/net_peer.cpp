#include "tests/support/net_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/error.h"

namespace keel::testing {

namespace {

sockaddr_in address(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1)
    throw std::invalid_argument("bad IP " + ip);
  return a;
}

uint16_t internet_checksum(const uint8_t* data, size_t size) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < size; i += 2) sum += uint32_t(data[i]) << 8 | data[i + 1];
  if (size % 2) sum += uint32_t(data[size - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n < 0 && errno != EINTR) throw_errno("poll");
  return n > 0;
}

}  // namespace

int ping(const std::string& ip, int count, std::chrono::steady_clock::time_point deadline) {
  UniqueFd fd(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  if (!fd.valid()) throw_errno("raw ICMP socket");
  const sockaddr_in to = address(ip, 0);
  const uint16_t id = static_cast<uint16_t>(::getpid());
  int replies = 0;
  for (uint16_t seq = 1; replies < count && std::chrono::steady_clock::now() < deadline; ++seq) {
    uint8_t packet[64] = {};
    packet[0] = ICMP_ECHO;
    packet[4] = id >> 8;
    packet[5] = id & 0xff;
    packet[6] = seq >> 8;
    packet[7] = seq & 0xff;
    for (size_t i = 8; i < sizeof packet; ++i) packet[i] = static_cast<uint8_t>(i);
    const uint16_t sum = internet_checksum(packet, sizeof packet);
    packet[2] = sum >> 8;
    packet[3] = sum & 0xff;
    if (::sendto(fd.get(), packet, sizeof packet, 0, reinterpret_cast<const sockaddr*>(&to),
                 sizeof to) < 0) {
      throw_errno("sendto ICMP echo");
    }
    const auto wait_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (std::chrono::steady_clock::now() < wait_until) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          wait_until - std::chrono::steady_clock::now());
      if (!readable(fd.get(), left)) break;
      uint8_t reply[1500];
      ssize_t n = ::recv(fd.get(), reply, sizeof reply, 0);
      if (n < 20) continue;
      const size_t ihl = (reply[0] & 0xf) * 4u;  // the raw socket hands over the IP header
      if (size_t(n) < ihl + sizeof packet) continue;
      const uint8_t* icmp = reply + ihl;
      if (icmp[0] == ICMP_ECHOREPLY && icmp[4] == packet[4] && icmp[5] == packet[5] &&
          icmp[6] == packet[6] && icmp[7] == packet[7] &&
          std::memcmp(icmp + 8, packet + 8, sizeof packet - 8) == 0 &&
          internet_checksum(icmp, sizeof packet) == 0) {
        ++replies;
        break;
      }
    }
  }
  return replies;
}

UdpSocket::UdpSocket(const std::string& ip, uint16_t port, int rcvbuf)
    : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  if (!fd_.valid()) throw_errno("UDP socket");
  if (rcvbuf > 0 &&
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
    throw_errno("SO_RCVBUFFORCE");
  }
  const sockaddr_in a = address(ip, port);
  if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) < 0) {
    throw_errno("bind UDP " + ip + ":" + std::to_string(port));
  }
}

void UdpSocket::send_to(const std::string& ip, uint16_t port, const std::vector<uint8_t>& payload) {
  const sockaddr_in a = address(ip, port);
  if (::sendto(fd_.get(), payload.data(), payload.size(), 0, reinterpret_cast<const sockaddr*>(&a),
               sizeof a) < 0) {
    throw_errno("sendto UDP " + ip);
  }
}

std::vector<uint8_t> UdpSocket::receive(std::chrono::milliseconds timeout) {
  if (!readable(fd_.get(), timeout)) return {};
  std::vector<uint8_t> buffer(65536);
  ssize_t n = ::recv(fd_.get(), buffer.data(), buffer.size(), 0);
  if (n < 0) throw_errno("recv UDP");
  buffer.resize(static_cast<size_t>(n));
  return buffer;
}

// /sys/class/net shows the namespace sysfs was mounted in; the calling
// thread's own view is /proc/thread-self/net/dev: per device, 8 receive
// counters (bytes, packets, ...) then 8 transmit ones.
uint64_t link_counter(const std::string& dev, const std::string& counter) {
  std::ifstream in("/proc/thread-self/net/dev");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name != dev) continue;
    std::istringstream fields(line.substr(colon + 1));
    std::vector<uint64_t> v;
    for (uint64_t x; fields >> x;) v.push_back(x);
    if (v.size() >= 10 && counter == "rx_bytes") return v[0];
    if (v.size() >= 10 && counter == "rx_packets") return v[1];
    if (v.size() >= 10 && counter == "tx_packets") return v[9];
  }
  throw std::runtime_error("no counter " + counter + " for " + dev);
}

}  // namespace keel::testing
