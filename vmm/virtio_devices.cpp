#include "vmm/virtio_devices.h"

#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/net/virtio_net_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"

namespace keel {

std::vector<std::unique_ptr<virtio::VirtioDevice>> make_virtio_devices(
    const state::v1::VmConfig& config, boost::asio::io_context& events, bool claim_disks) {
  std::vector<std::unique_ptr<virtio::VirtioDevice>> devices;
  for (const auto& disk : config.disks()) {
    devices.push_back(std::make_unique<virtio::VirtioBlkDevice>(events, disk, claim_disks));
  }
  for (const auto& net : config.nets()) {
    devices.push_back(std::make_unique<virtio::VirtioNetDevice>(events, net));
  }
  if (config.rng()) devices.push_back(std::make_unique<virtio::VirtioRngDevice>(events));
  return devices;
}

}  // namespace keel
