// One request popped from a virtqueue: its head index (what the device hands
// back in the used ring) and its buffers in chain order, already checked to
// lie in guest RAM, readable ones first (virtio 1.x, 2.7.4.2).
#pragma once

#include <cstdint>
#include <vector>

namespace keel::virtio {

struct ChainSegment {
  uint64_t gpa;
  uint32_t len;
  bool writable;  // device-writable (VIRTQ_DESC_F_WRITE)

  bool operator==(const ChainSegment&) const = default;
};

struct DescriptorChain {
  uint16_t head = 0;
  std::vector<ChainSegment> segments;
  uint32_t readable_bytes = 0;  // sum over the readable segments
  uint32_t writable_bytes = 0;  // sum over the writable segments
};

}  // namespace keel::virtio
