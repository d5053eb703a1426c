// A test stand-in for a guest driver: lays out a split virtqueue's rings in a
// GuestMemory and makes chains available the way a driver would (virtio 1.x,
// 2.7.13), or breaks them on purpose.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common/guest_memory.h"
#include "devices/virtio/queue/split_queue.h"
#include "devices/virtio/queue/virtio_ring.h"

namespace keel::virtio::testing {

struct Buffer {
  uint64_t gpa;
  uint32_t len;
  bool writable = false;
};

class VirtqueueDriver {
 public:
  // Rings at fixed places at the bottom of memory: descriptor table at 0x1000,
  // driver area at 0x2000 + ..., device area 4 KiB further on (sizes up to 128
  // fit); buffers belong at 0x10000 and above.
  VirtqueueDriver(GuestMemory& memory, uint16_t size, bool event_idx = false, bool indirect = false)
      : memory_(memory) {
    config_.size = size;
    config_.desc_table = 0x1000;
    config_.driver_area = config_.desc_table + desc_table_bytes(size);
    config_.device_area = (config_.driver_area + avail_ring_bytes(size) + 0xfff) & ~uint64_t{0xfff};
    config_.event_idx = event_idx;
    config_.indirect_desc = indirect;
  }

  const SplitQueueConfig& config() const { return config_; }
  SplitQueueConfig& config() { return config_; }

  void set_desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    memory_.write_obj(config_.desc_table + 16ull * index, VirtqDesc{addr, len, flags, next});
  }
  static void set_table_desc(GuestMemory& memory, uint64_t table, uint16_t index, uint64_t addr,
                             uint32_t len, uint16_t flags, uint16_t next = 0) {
    memory.write_obj(table + 16ull * index, VirtqDesc{addr, len, flags, next});
  }

  // Writes `buffers` as one chain of descriptors starting at `first`
  // (consecutive indices, mod size) and returns the head.
  uint16_t write_chain(uint16_t first, std::initializer_list<Buffer> buffers) {
    return write_chain(first, std::vector<Buffer>(buffers));
  }
  uint16_t write_chain(uint16_t first, const std::vector<Buffer>& buffers) {
    uint16_t index = first;
    size_t n = 0;
    for (const Buffer& b : buffers) {
      const bool more = ++n < buffers.size();
      const uint16_t next = static_cast<uint16_t>((index + 1) % config_.size);
      set_desc(index, b.gpa, b.len, (b.writable ? kDescFWrite : 0) | (more ? kDescFNext : 0),
               more ? next : 0);
      index = next;
    }
    return first;
  }

  // Publishes `head` in the driver area and moves avail idx on by one.
  void make_available(uint16_t head) {
    const uint16_t idx = avail_idx();
    memory_.write_obj<uint16_t>(
        config_.driver_area + kAvailRingOffset + 2ull * (idx % config_.size), head);
    set_avail_idx(static_cast<uint16_t>(idx + 1));
  }
  uint16_t avail_idx() const {
    return memory_.read_obj<uint16_t>(config_.driver_area + kAvailIdxOffset);
  }
  void set_avail_idx(uint16_t idx) {
    memory_.write_obj(config_.driver_area + kAvailIdxOffset, idx);
  }
  void set_avail_flags(uint16_t flags) { memory_.write_obj(config_.driver_area, flags); }
  void set_used_event(uint16_t v) {
    memory_.write_obj(config_.driver_area + used_event_offset(config_.size), v);
  }

  uint16_t used_idx() const {
    return memory_.read_obj<uint16_t>(config_.device_area + kUsedIdxOffset);
  }
  uint16_t used_flags() const { return memory_.read_obj<uint16_t>(config_.device_area); }
  VirtqUsedElem used_elem(uint16_t slot) const {
    return memory_.read_obj<VirtqUsedElem>(config_.device_area + kUsedRingOffset +
                                           8ull * (slot % config_.size));
  }
  uint16_t avail_event() const {
    return memory_.read_obj<uint16_t>(config_.device_area + avail_event_offset(config_.size));
  }

 private:
  GuestMemory& memory_;
  SplitQueueConfig config_;
};

}  // namespace keel::virtio::testing
