// The device side of a split virtqueue (virtio 1.x, 2.7): pops descriptor
// chains the driver made available and returns them through the used ring.
//
// Everything in the rings is guest-written and hostile. The configuration is
// checked once when the queue is created (activation), every chain when it is
// popped; any violation throws VirtqueueError and leaves the queue broken:
// every later call throws kQueueBroken until the device replaces the queue
// (on driver reset). The device answers an error with DEVICE_NEEDS_RESET.
//
// Reads go through GuestMemory::host_range, writes (used ring, avail_event,
// used flags) through GuestMemory::host_range_for_write, the one write path
// that marks pages dirty for migration.
//
// Not thread-safe: one device thread owns a queue. The guest's vCPUs run
// concurrently, hence the fences around the ring indices.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/guest_memory.h"
#include "devices/virtio/queue/descriptor_chain.h"
#include "devices/virtio/queue/virtio_ring.h"
#include "devices/virtio/queue/virtqueue_error.h"

namespace keel::virtio {

// What the driver wrote into the transport's queue registers, plus the ring
// features negotiated for the device.
struct SplitQueueConfig {
  uint16_t size = 0;           // queue_size; 32768 is encoded as 32768 (fits u16)
  uint64_t desc_table = 0;     // queue_desc
  uint64_t driver_area = 0;    // queue_driver: the available ring
  uint64_t device_area = 0;    // queue_device: the used ring
  bool event_idx = false;      // VIRTIO_F_EVENT_IDX negotiated
  bool indirect_desc = false;  // VIRTIO_F_INDIRECT_DESC negotiated
};

// The state a snapshot saves besides the rings themselves (which live in
// guest memory and travel with it).
struct SplitQueueState {
  uint16_t last_avail_idx = 0;  // next driver-area slot the device will read
  uint16_t next_used_idx = 0;   // used idx the device publishes next

  bool operator==(const SplitQueueState&) const = default;
};

// Chain bounds chosen here, beyond the spec's own: a chain of at most 1024
// buffers (UIO_MAXIOV, so a chain maps to one preadv/pwritev), at most
// 4 GiB - 1 bytes (the used length is 32 bits), and indirect tables of at most
// 32768 entries (the largest queue; 512 KiB).
inline constexpr uint32_t kMaxChainSegments = 1024;
inline constexpr uint32_t kMaxIndirectEntries = 32768;

// Checks a configuration as activation does (throws VirtqueueError).
void validate_split_queue_config(const GuestMemory& memory, const SplitQueueConfig& config);

class SplitQueue {
 public:
  // Activation: validates `config` against `memory` (which must outlive the
  // queue) and starts at indices 0, as after a reset.
  SplitQueue(GuestMemory& memory, const SplitQueueConfig& config);

  const SplitQueueConfig& config() const { return config_; }
  bool broken() const { return broken_; }

  // The next available chain, or nullopt when the driver has made none
  // available. The driver may have at most `size` chains outstanding
  // (available and not yet used): each needs its own head descriptor. Throws VirtqueueError (and
  // breaks the queue) on a bad one. With EVENT_IDX, also publishes avail_event = the new
  // last_avail_idx.
  std::optional<DescriptorChain> pop_chain();

  // Returns a popped chain: writes the used element, then (release) the used
  // index (2.7.8). `written_len` is how many bytes the device wrote into the
  // chain's writable buffers.
  void push_used(uint16_t head, uint32_t written_len);

  // Whether the driver wants an interrupt for what was pushed since the
  // previous call (2.7.7.2): VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX
  // the used_event threshold. Each call moves the marker, as Linux and QEMU do.
  bool should_notify();

  // Kick suppression (2.7.7.1, 2.7.10). After processing, the device calls
  // enable_notification(); if it returns true more chains arrived meanwhile
  // and the device must keep popping (otherwise a kick could be lost).
  void disable_notification();
  bool enable_notification();
  // The drain step every device takes with notifications off: the next
  // chain; when the ring looks empty, notifications go back on and it is
  // looked at once more (a chain the driver added before it saw the change
  // would otherwise wait for a kick that never comes). nullopt: empty, with
  // notifications on. Throws as pop_chain does.
  std::optional<DescriptorChain> next_chain();

  // Snapshot and restore. set_state re-validates: at most `size` chains
  // outstanding (popped but not used, plus still in the driver area); throws
  // VirtqueueError(kBadRestoreState) otherwise, without breaking the queue.
  SplitQueueState state() const { return {last_avail_idx_, next_used_idx_}; }
  void set_state(const SplitQueueState& state);

 private:
  [[noreturn]] void fail(VirtqueueErrorKind kind, const std::string& detail = {});
  void check_usable() const;
  uint16_t load_avail_idx() const;
  void walk(uint16_t head, DescriptorChain& chain);
  void add_segment(DescriptorChain& chain, uint64_t gpa, uint32_t len, bool writable);
  void walk_indirect(const VirtqDesc& desc, DescriptorChain& chain);

  GuestMemory& memory_;
  SplitQueueConfig config_;
  uint16_t last_avail_idx_ = 0;
  uint16_t next_used_idx_ = 0;
  uint16_t signalled_used_idx_ = 0;  // used idx at the last notification decision
  bool signalled_used_valid_ = false;
  bool broken_ = false;
};

}  // namespace keel::virtio
