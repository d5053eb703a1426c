// The VirtioDevice defaults: a device without snapshot support of its own.
#include "devices/virtio/queue/virtio_device.h"

#include <stdexcept>

#include "common/state_check.h"
#include "proto/device_state.pb.h"

namespace keel::virtio {

namespace pb = state::v1;

std::string virtio_device_name(uint16_t type) {
  switch (type) {
    case kDeviceTypeNet:
      return "virtio-net";
    case kDeviceTypeBlock:
      return "virtio-blk";
    case kDeviceTypeEntropy:
      return "virtio-rng";
    default:
      return "virtio device type " + std::to_string(type);
  }
}

std::optional<SplitQueueState> VirtioDevice::queue_state(uint16_t) const {
  throw std::logic_error("this virtio device cannot be snapshotted while running");
}

void VirtioDevice::save_state(pb::VirtioDeviceState& state) const {
  state.Clear();
}

void VirtioDevice::restore_state(const pb::VirtioDeviceState& state) {
  if (state.kind_case() != pb::VirtioDeviceState::KIND_NOT_SET) {
    refuse_state(virtio_device_name(device_type()), "device", "holds another device's state");
  }
}

}  // namespace keel::virtio
