#include "devices/virtio/queue/virtqueue_error.h"

namespace keel::virtio {

const char* to_string(VirtqueueErrorKind kind) {
  switch (kind) {
    case VirtqueueErrorKind::kBadQueueSize:
      return "bad queue size";
    case VirtqueueErrorKind::kMisalignedRing:
      return "misaligned ring";
    case VirtqueueErrorKind::kRingOutsideMemory:
      return "ring outside guest memory";
    case VirtqueueErrorKind::kBadRestoreState:
      return "bad restored queue state";
    case VirtqueueErrorKind::kAvailIndexTooFarAhead:
      return "available index too far ahead";
    case VirtqueueErrorKind::kHeadOutOfRange:
      return "head index out of range";
    case VirtqueueErrorKind::kNextOutOfRange:
      return "next index out of range";
    case VirtqueueErrorKind::kChainTooLong:
      return "descriptor chain too long (loop)";
    case VirtqueueErrorKind::kTooManySegments:
      return "too many buffers in a chain";
    case VirtqueueErrorKind::kChainTooLarge:
      return "chain larger than 4 GiB";
    case VirtqueueErrorKind::kBufferOutsideMemory:
      return "buffer outside guest memory";
    case VirtqueueErrorKind::kWritableBeforeReadable:
      return "device-writable buffer before a readable one";
    case VirtqueueErrorKind::kIndirectNotNegotiated:
      return "indirect descriptor not negotiated";
    case VirtqueueErrorKind::kIndirectWithNext:
      return "indirect descriptor with NEXT";
    case VirtqueueErrorKind::kNestedIndirect:
      return "nested indirect descriptor";
    case VirtqueueErrorKind::kBadIndirectTableLength:
      return "bad indirect table length";
    case VirtqueueErrorKind::kIndirectTableOutsideMemory:
      return "indirect table outside guest memory";
    case VirtqueueErrorKind::kUsedHeadOutOfRange:
      return "used head out of range";
    case VirtqueueErrorKind::kNothingInFlight:
      return "no chain in flight to complete";
    case VirtqueueErrorKind::kQueueBroken:
      return "queue is broken until reset";
  }
  return "unknown virtqueue error";
}

VirtqueueError::VirtqueueError(VirtqueueErrorKind kind, const std::string& detail)
    : std::runtime_error(std::string("virtqueue: ") + to_string(kind) +
                         (detail.empty() ? "" : " (" + detail + ")")),
      kind_(kind) {}

}  // namespace keel::virtio
