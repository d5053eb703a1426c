// The virtio devices a configuration asks for, in PCI slot order: disks
// first (the first is the guest's vda), then network adapters, then the
// entropy source.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <vector>

#include "devices/virtio/queue/virtio_device.h"
#include "proto/vm_config.pb.h"

namespace keel {

// Throws InputError for a disk or tap that cannot be opened.
std::vector<std::unique_ptr<virtio::VirtioDevice>> make_virtio_devices(
    const state::v1::VmConfig& config, boost::asio::io_context& events, bool claim_disks = true);

}  // namespace keel
