// The frame a guest's network card sends where the guest now runs, so that
// switches and bridges learn its MAC on the new port at once (a live
// migration's destination; QEMU announces the same way): a RARP request
// (RFC 903, EtherType 0x8035) broadcast from the guest's MAC, naming it as
// sender and target, padded to Ethernet's 60-byte minimum.
#pragma once

#include <cstdint>
#include <vector>

#include "devices/virtio/net/mac_address.h"

namespace keel::virtio {

inline constexpr size_t kAnnounceFrameBytes = 60;

std::vector<uint8_t> rarp_announce_frame(const MacAddress& mac);

}  // namespace keel::virtio
