// libFuzzer target: the real virtio devices (virtio-blk on a memfd disk,
// virtio-rng, virtio-net on a tap) behind the real virtio-pci transport,
// driven by a guest that writes anything anywhere in the configuration
// space and BAR0 and whose memory (the rings, descriptors and buffers) is
// the fuzzer's. Requests complete through the device's event loop, run
// after every access. Nothing may crash or hang; the transport keeps its
// invariants (DRIVER_OK only on FEATURES_OK; negotiated features a subset
// of the offered ones).
//
// virtio-net's tap lives in a network namespace the target makes for
// itself on first use (it needs root, as the VMM does): a persistent tap,
// up, without IPv6 (no traffic of its own); frames for the guest are sent
// into it through a packet socket, so they reach the device's receive path.
//
// Input: u8 device (% 3: 0 blk, 1 rng, 2 net), then guest memory bytes (the
// first 4 KiB of the fuzz memory), then operations of 12 bytes:
// u8 op | u8 width | u16 offset | u64 value.
//   op % 5: 0 BAR write into the common config (offset % 0x40: bring-up),
//           1 BAR write anywhere (notify, device config, MSI-X), 2 BAR read,
//           3 PCI configuration write (offset % 0x100; BAR placement, MSI-X),
//           4 net: a frame of 14 + offset % 1500 bytes (value repeated)
//             arrives for the guest; other devices: nothing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"
#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/net/virtio_net_device.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
using namespace keel::virtio;

namespace {

class NullSink : public MsiSink {
 public:
  void send(uint16_t, uint64_t, uint32_t) override {}
};

// A 1 MiB disk in memory, opened by path like an image file.
const std::string& disk_path() {
  static UniqueFd fd(::memfd_create("fuzz-disk", MFD_CLOEXEC));
  static const std::string path = [] {
    FUZZ_CHECK(fd.valid() && ::ftruncate(fd.get(), 1 << 20) == 0);
    return "/proc/self/fd/" + std::to_string(fd.get());
  }();
  return path;
}

constexpr const char* kTap = "kfuzz0";

void write_text(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  FUZZ_CHECK(fd.valid() &&
             ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

// The tap, in a network namespace of the target's own, made once; and a
// packet socket that sends frames into it (they come out at the device).
int frame_socket() {
  static UniqueFd sock = [] {
    FUZZ_CHECK(::unshare(CLONE_NEWNET) == 0);
    {
      UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
      FUZZ_CHECK(tun.valid());
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, kTap, IFNAMSIZ - 1);
      ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
      FUZZ_CHECK(::ioctl(tun.get(), TUNSETIFF, &ifr) == 0);
      FUZZ_CHECK(::ioctl(tun.get(), TUNSETPERSIST, 1) == 0);
    }
    write_text(std::string("/proc/sys/net/ipv6/conf/") + kTap + "/disable_ipv6", "1");
    UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq up{};
    std::strncpy(up.ifr_name, kTap, IFNAMSIZ - 1);
    FUZZ_CHECK(::ioctl(control.get(), SIOCGIFFLAGS, &up) == 0);
    up.ifr_flags |= IFF_UP;
    FUZZ_CHECK(::ioctl(control.get(), SIOCSIFFLAGS, &up) == 0);
    UniqueFd packet(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    FUZZ_CHECK(packet.valid());
    sockaddr_ll at{};
    at.sll_family = AF_PACKET;
    at.sll_ifindex = static_cast<int>(::if_nametoindex(kTap));
    FUZZ_CHECK(::bind(packet.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
    return packet;
  }();
  return sock.get();
}

// Whether the kernel has the tap's link up (IFLA_OPERSTATE), asked over
// rtnetlink. A tap's carrier comes on when the device attaches to it, and
// only then does the kernel's link watcher give it a queue that passes
// frames on; until then a frame sent into it is dropped.
bool link_up(int ifindex) {
  static UniqueFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  FUZZ_CHECK(nl.valid());
  struct {
    nlmsghdr h;
    ifinfomsg i;
  } ask{};
  ask.h.nlmsg_len = sizeof ask;
  ask.h.nlmsg_type = RTM_GETLINK;
  ask.h.nlmsg_flags = NLM_F_REQUEST;
  ask.i.ifi_family = AF_UNSPEC;
  ask.i.ifi_index = ifindex;
  FUZZ_CHECK(::send(nl.get(), &ask, sizeof ask, 0) == sizeof ask);
  alignas(nlmsghdr) char reply[8192];
  const ssize_t n = ::recv(nl.get(), reply, sizeof reply, 0);
  FUZZ_CHECK(n > 0);
  const auto* h = reinterpret_cast<const nlmsghdr*>(reply);
  FUZZ_CHECK(NLMSG_OK(h, static_cast<unsigned>(n)) && h->nlmsg_type == RTM_NEWLINK);
  const auto* info = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
  int left = static_cast<int>(IFLA_PAYLOAD(h));
  for (const rtattr* a = IFLA_RTA(info); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    // IF_OPER_UP (RFC 2863), from linux/if.h, which clashes with net/if.h.
    constexpr uint8_t kOperUp = 6;
    if (a->rta_type == IFLA_OPERSTATE) return *static_cast<const uint8_t*>(RTA_DATA(a)) == kOperUp;
  }
  return false;
}

void send_frame(uint16_t length, uint64_t value, bool& link_checked) {
  if (!link_checked) {
    const int ifindex = static_cast<int>(::if_nametoindex(kTap));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!link_up(ifindex)) {
      FUZZ_CHECK(std::chrono::steady_clock::now() < deadline);
      ::sched_yield();
    }
    link_checked = true;
  }
  uint8_t frame[14 + 1500];
  const size_t n = 14 + length % 1500;
  for (size_t i = 0; i < n; ++i) frame[i] = static_cast<uint8_t>(value >> (8 * (i % 8)));
  frame[0] = 0x02;  // a unicast destination (the device takes any)
  // A full queue (the device has no buffers) drops it: as a real link would.
  (void)::send(frame_socket(), frame, n, 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const unsigned kind = fuzz::take<uint8_t>(data, size) % 3;
  if (kind == 2) frame_socket();  // the namespace first: the device opens the tap in it
  const size_t memory_bytes = std::min<size_t>(size, 4096);
  GuestMemory& memory = fuzz::fill_memory(data, memory_bytes);
  data += memory_bytes;
  size -= memory_bytes;

  boost::asio::io_context events;
  // poll() stops an io_context that has no work: a device that waits for
  // nothing until it is activated (virtio-net, virtio-rng) would find the
  // loop stopped for good by then.
  auto work = boost::asio::make_work_guard(events);
  std::unique_ptr<VirtioDevice> device;
  if (kind == 1) {
    device = std::make_unique<VirtioRngDevice>(events);
  } else if (kind == 2) {
    state::v1::NetConfig config;
    config.set_tap(kTap);
    config.set_mac(std::string("\x52\x54\x00\x12\x34\x56", 6));
    device = std::make_unique<VirtioNetDevice>(events, config);
  } else {
    state::v1::DiskConfig config;
    config.set_path(disk_path());
    device = std::make_unique<VirtioBlkDevice>(events, config);
  }
  NullSink sink;
  {
    VirtioPciDevice pci(*device, memory, sink, VirtioPciDevice::Hooks{[](bool) {}});
    uint8_t buffer[8];
    bool link_checked = false;  // the tap passes frames on since this device attached
    for (unsigned n = 0; size >= 12 && n < 500; ++n) {
      const auto op = fuzz::take<uint8_t>(data, size);
      const auto width = static_cast<size_t>(fuzz::take<uint8_t>(data, size) % 9);
      const auto offset = fuzz::take<uint16_t>(data, size);
      const auto value = fuzz::take<uint64_t>(data, size);
      std::memcpy(buffer, &value, sizeof buffer);
      switch (op % 5) {
        case 0:
          pci.bar_write(VirtioPciDevice::kCommonOffset + offset % 0x40,
                        std::span<const uint8_t>(buffer, width));
          break;
        case 1:
          pci.bar_write(offset, std::span<const uint8_t>(buffer, width));
          break;
        case 2:
          pci.bar_read(offset, std::span<uint8_t>(buffer, width));
          break;
        case 3:
          pci.config_write(offset % 0x100, static_cast<uint32_t>(value),
                           static_cast<uint8_t>(op >> 4));
          break;
        case 4:
          if (kind == 2) send_frame(offset, value, link_checked);
          break;
      }
      events.poll();  // completions (io_uring, entropy) as the event loop runs them
      if (pci.status() & kStatusDriverOk) FUZZ_CHECK(pci.status() & kStatusFeaturesOk);
      if (pci.status() & kStatusFeaturesOk) {
        FUZZ_CHECK((pci.driver_features() & ~pci.offered_features()) == 0);
      }
    }
    // The transport goes, then the device, with no event loop run in
    // between: as in keel-vmm, where a function's transport and device go
    // together once the loop has stopped.
  }
  return 0;
}
