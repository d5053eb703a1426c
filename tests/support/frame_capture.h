// A raw packet socket that receives the Ethernet frames of one EtherType
// (ETH_P_ALL: every one) passing a network interface: what a guest's tap
// sends into its bridge, seen from the host. Header-only: unit tests use it
// too. Throws std::runtime_error naming the interface when it cannot.
#pragma once

#include <arpa/inet.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/unique_fd.h"

namespace keel::testing {

inline UniqueFd capture_frames(const std::string& dev, uint16_t ethertype) {
  UniqueFd fd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ethertype)));
  sockaddr_ll at{};
  at.sll_family = AF_PACKET;
  at.sll_protocol = htons(ethertype);
  at.sll_ifindex = static_cast<int>(::if_nametoindex(dev.c_str()));
  if (!fd.valid() || at.sll_ifindex == 0 ||
      ::bind(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
    throw std::runtime_error("capturing frames on " + dev + ": " + std::strerror(errno));
  }
  return fd;
}

}  // namespace keel::testing
