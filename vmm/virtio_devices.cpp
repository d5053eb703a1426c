#include "vmm/virtio_devices.h"

#include "common/error.h"

namespace keel {

std::vector<std::unique_ptr<virtio::VirtioDevice>> make_virtio_devices(
    const VmmOptions& options, boost::asio::io_context& events) {
  (void)events;
  std::vector<std::unique_ptr<virtio::VirtioDevice>> devices;
  if (!options.disks.empty() || !options.nets.empty() || options.rng) {
    throw InputError("virtio devices are not built into this keel-vmm yet");
  }
  return devices;
}

}  // namespace keel
