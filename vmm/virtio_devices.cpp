#include "vmm/virtio_devices.h"

#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/net/virtio_net_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"

namespace keel {

namespace {

// A stable address for a tap when the operator names none: the guest's
// network configuration (DHCP leases, neighbour caches) survives restarts.
// Locally administered, unicast (IEEE 802: first byte bits 1 and 0).
MacAddress mac_for_tap(const std::string& tap) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (unsigned char c : tap) hash = (hash ^ c) * 16777619u;
  return {0x02, 0x4b, 0x45, static_cast<uint8_t>(hash >> 16), static_cast<uint8_t>(hash >> 8),
          static_cast<uint8_t>(hash)};
}

}  // namespace

MacAddress effective_mac(const NetSpec& net) { return net.mac ? *net.mac : mac_for_tap(net.tap); }

std::vector<std::unique_ptr<virtio::VirtioDevice>> make_virtio_devices(
    const VmmOptions& options, boost::asio::io_context& events) {
  std::vector<std::unique_ptr<virtio::VirtioDevice>> devices;
  for (const DiskSpec& disk : options.disks) {
    virtio::DiskOptions d;
    d.path = disk.path;
    d.read_only = disk.readonly;
    devices.push_back(std::make_unique<virtio::VirtioBlkDevice>(events, d));
  }
  for (const NetSpec& net : options.nets) {
    virtio::NetOptions n;
    n.tap = net.tap;
    n.mac = effective_mac(net);
    devices.push_back(std::make_unique<virtio::VirtioNetDevice>(events, n));
  }
  if (options.rng) devices.push_back(std::make_unique<virtio::VirtioRngDevice>(events));
  return devices;
}

}  // namespace keel
