// The split virtqueue's layout in guest memory (virtio 1.x, 2.7): a
// descriptor table, the driver area ("available ring") and the device area
// ("used ring"). All fields are little-endian (2.4); Keel runs on x86-64 only.
#pragma once

#include <bit>
#include <cstdint>

namespace keel::virtio {

static_assert(std::endian::native == std::endian::little,
              "virtio rings are little-endian; a big-endian host would need byte swaps");

// 2.7: the largest queue a split virtqueue may have.
inline constexpr uint32_t kMaxQueueSize = 32768;

// 2.7.5: one entry of the descriptor table (and of an indirect table).
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);

inline constexpr uint16_t kDescFNext = 1;      // the chain goes on at `next`
inline constexpr uint16_t kDescFWrite = 2;     // device-writable buffer
inline constexpr uint16_t kDescFIndirect = 4;  // the buffer is an indirect table

// 2.7.6: driver area. flags, idx, ring[size], then used_event (EVENT_IDX).
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint64_t kAvailIdxOffset = 2;
inline constexpr uint64_t kAvailRingOffset = 4;

// 2.7.8: device area. flags, idx, ring[size] of {id, len}, then avail_event.
struct VirtqUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VirtqUsedElem) == 8);
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint64_t kUsedIdxOffset = 2;
inline constexpr uint64_t kUsedRingOffset = 4;

// 2.7: alignment and size of each part for a queue of `size` entries. The
// sizes include the event fields whether or not EVENT_IDX is negotiated, as
// the table in 2.7 does.
inline constexpr uint64_t kDescTableAlign = 16;
inline constexpr uint64_t kAvailAlign = 2;
inline constexpr uint64_t kUsedAlign = 4;
inline constexpr uint64_t desc_table_bytes(uint32_t size) {
  return 16ull * size;
}
inline constexpr uint64_t avail_ring_bytes(uint32_t size) {
  return 6 + 2ull * size;
}
inline constexpr uint64_t used_ring_bytes(uint32_t size) {
  return 6 + 8ull * size;
}
inline constexpr uint64_t used_event_offset(uint32_t size) {
  return kAvailRingOffset + 2ull * size;
}
inline constexpr uint64_t avail_event_offset(uint32_t size) {
  return kUsedRingOffset + 8ull * size;
}

// Feature bits that change how the rings are read (6).
inline constexpr unsigned kFeatureIndirectDesc = 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr unsigned kFeatureEventIdx = 29;      // VIRTIO_F_EVENT_IDX

// 2.7.7.2: with EVENT_IDX, whether the device must notify the driver after
// moving the used index from `old_idx` to `new_idx`, given the driver asked
// to be told once the used index passes `event_idx`. All arithmetic mod 2^16.
inline constexpr bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

}  // namespace keel::virtio
