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
// up, without IPv6. The guest's side is fuzzed (configuration, queues,
// transmitted frames, receive buffers posted); no frames are sent into the
// tap, so the receive path runs up to reading an empty tap (the unit tests
// deliver real frames).
//
// Input: u8 device (% 3: 0 blk, 1 rng, 2 net), then guest memory bytes (the
// first 4 KiB of the fuzz memory), then operations of 12 bytes:
// u8 op | u8 width | u16 offset | u64 value.
//   op % 4: 0 BAR write into the common config (offset % 0x40: bring-up),
//           1 BAR write anywhere (notify, device config, MSI-X), 2 BAR read,
//           3 PCI configuration write (offset % 0x100; BAR placement, MSI-X).
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
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

// The tap, persistent and up, in a network namespace of the target's own,
// made once before the first virtio-net input.
void make_tap() {
  static const bool made = [] {
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
    return true;
  }();
  (void)made;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const unsigned kind = fuzz::take<uint8_t>(data, size) % 3;
  if (kind == 2) make_tap();  // the namespace first: the device opens the tap in it
  const size_t memory_bytes = std::min<size_t>(size, 4096);
  GuestMemory& memory = fuzz::fill_memory(data, memory_bytes);
  data += memory_bytes;
  size -= memory_bytes;

  boost::asio::io_context events;
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
    for (unsigned n = 0; size >= 12 && n < 500; ++n) {
      const auto op = fuzz::take<uint8_t>(data, size);
      const auto width = static_cast<size_t>(fuzz::take<uint8_t>(data, size) % 9);
      const auto offset = fuzz::take<uint16_t>(data, size);
      const auto value = fuzz::take<uint64_t>(data, size);
      std::memcpy(buffer, &value, sizeof buffer);
      switch (op % 4) {
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
