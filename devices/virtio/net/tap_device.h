// A tap network interface, attached for reading and writing Ethernet frames
// with a virtio-net header in front (IFF_VNET_HDR).
//
// Keel attaches to a tap that already exists; it never creates one. The tap
// is part of the host's network plumbing (created with
// `ip tuntap add dev NAME mode tap` and enslaved to a bridge by whoever
// configures the host's networks), and a tap Keel made up would be connected
// to nothing and would vanish with the process.
#pragma once

#include <string>

#include "common/unique_fd.h"

namespace keel {

class TapDevice {
 public:
  // Attaches to the tap interface `name` in the calling thread's network
  // namespace: non-blocking, no packet information prefix, a 12-byte
  // virtio_net_hdr_v1 before every frame (virtio 1.x 5.1.6), no receive
  // offloads yet. Throws InputError naming the problem (no such interface,
  // not a tap, in use by another process, not permitted).
  explicit TapDevice(const std::string& name);

  TapDevice(TapDevice&&) = default;
  TapDevice& operator=(TapDevice&&) = default;

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }

  // TUNSETOFFLOAD: which offloaded frames the reader (the guest) accepts,
  // TUN_F_* bits. TSO bits only take effect together with TUN_F_CSUM.
  void set_offload(unsigned tun_flags);
  // TUNSETSNDBUF: how many bytes of written frames may be in flight in the
  // host before a write fails with EAGAIN.
  void set_send_buffer(int bytes);

 private:
  std::string name_;
  UniqueFd fd_;
};

}  // namespace keel
