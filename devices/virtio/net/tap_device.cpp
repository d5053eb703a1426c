#include "devices/virtio/net/tap_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "devices/virtio/net/virtio_net.h"

namespace keel {

TapDevice::TapDevice(const std::string& name) : name_(name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    throw InputError("tap device name '" + name + "' must have 1 to " +
                     std::to_string(IFNAMSIZ - 1) + " characters");
  }
  // TUNSETIFF would create a missing interface: look first.
  if (::if_nametoindex(name.c_str()) == 0) {
    throw InputError("no tap device " + name + " (create it first: ip tuntap add dev " + name +
                     " mode tap)");
  }
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw InputError(std::string("cannot open /dev/net/tun for tap ") + name + ": " +
                     std::strerror(errno));
  }
  fd_.reset(fd);

  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd_.get(), TUNSETIFF, &ifr) < 0) {
    const int err = errno;
    switch (err) {
      case EBUSY:
        throw InputError("tap device " + name + " is in use by another process");
      case EPERM:
      case EACCES:
        throw InputError("not permitted to attach to tap device " + name +
                         " (it belongs to another user, or CAP_NET_ADMIN is missing)");
      case EINVAL:
        throw InputError(name + " is not a single-queue tap device");
      default:
        throw InputError("cannot attach to tap device " + name + ": " + std::strerror(err));
    }
  }
  // The interface may have gone between the look and the attach, and then
  // TUNSETIFF made a new, non-persistent one nobody plugged in.
  ifreq got{};
  if (::ioctl(fd_.get(), TUNGETIFF, &got) < 0) throw_errno("TUNGETIFF " + name);
  if (!(got.ifr_flags & IFF_PERSIST)) {
    throw InputError("no tap device " + name + " (it disappeared while attaching)");
  }

  int hdr_size = virtio::kNetHdrSize;
  if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &hdr_size) < 0) throw_errno("TUNSETVNETHDRSZ " + name);
  set_offload(0);
}

void TapDevice::set_offload(unsigned tun_flags) {
  if (::ioctl(fd_.get(), TUNSETOFFLOAD, tun_flags) < 0) throw_errno("TUNSETOFFLOAD " + name_);
}

void TapDevice::set_send_buffer(int bytes) {
  if (::ioctl(fd_.get(), TUNSETSNDBUF, &bytes) < 0) throw_errno("TUNSETSNDBUF " + name_);
}

}  // namespace keel
