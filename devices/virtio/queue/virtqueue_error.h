// Why a virtqueue was refused. A guest that breaks its queue gets one of
// these, never undefined behaviour: the device then sets DEVICE_NEEDS_RESET
// (virtio 1.x, 2.1.2) and stops using the queue until the driver resets it.
#pragma once

#include <stdexcept>
#include <string>

namespace keel::virtio {

enum class VirtqueueErrorKind {
  // activation (2.7) and restore
  kBadQueueSize,       // 0, more than 32768, or not a power of two
  kMisalignedRing,     // descriptor table not 16-, driver area not 2-, device area not 4-aligned
  kRingOutsideMemory,  // a ring does not lie entirely in guest RAM
  kBadRestoreState,    // saved indices inconsistent with the rings
  // chain walking (2.7.5, 2.7.6)
  kAvailIndexTooFarAhead,   // the driver published more than `size` new heads
  kHeadOutOfRange,          // a head index from the driver area >= size
  kNextOutOfRange,          // a NEXT link past the end of its table
  kChainTooLong,            // more descriptors than the table holds: a loop
  kTooManySegments,         // more buffers than kMaxChainSegments
  kChainTooLarge,           // more bytes in total than fit a 32-bit used length
  kBufferOutsideMemory,     // [addr, addr+len) not entirely in guest RAM
  kWritableBeforeReadable,  // 2.7.4.2: device-writable buffer before a readable one
  kIndirectNotNegotiated,   // INDIRECT flag without VIRTIO_F_INDIRECT_DESC
  kIndirectWithNext,        // 2.7.5.3.1: INDIRECT together with NEXT
  kNestedIndirect,          // 2.7.5.3.1: INDIRECT inside an indirect table
  kBadIndirectTableLength,  // 0, not a multiple of 16, or above kMaxIndirectEntries
  kIndirectTableOutsideMemory,
  // device side
  kUsedHeadOutOfRange,  // push_used with a head >= size
  kNothingInFlight,     // push_used with no popped chain left to complete
  kQueueBroken,         // the queue already failed; it stays failed until reset
};

const char* to_string(VirtqueueErrorKind kind);

class VirtqueueError : public std::runtime_error {
 public:
  VirtqueueError(VirtqueueErrorKind kind, const std::string& detail);
  VirtqueueErrorKind kind() const { return kind_; }

 private:
  VirtqueueErrorKind kind_;
};

}  // namespace keel::virtio
