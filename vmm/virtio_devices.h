// The virtio devices the command line asks for (--disk, --net, --rng), in
// PCI slot order: disks first (the first is the guest's vda), then network
// adapters, then the entropy source.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <vector>

#include "devices/virtio/queue/virtio_device.h"
#include "vmm/vmm_options.h"

namespace keel {

// The MAC a --net adapter gets: mac= when given, else a stable locally
// administered one derived from the tap's name.
MacAddress effective_mac(const NetSpec& net);

// Throws InputError for a disk or tap that cannot be opened.
std::vector<std::unique_ptr<virtio::VirtioDevice>> make_virtio_devices(
    const VmmOptions& options, boost::asio::io_context& events);

}  // namespace keel
