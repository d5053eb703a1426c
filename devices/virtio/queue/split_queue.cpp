#include "devices/virtio/queue/split_queue.h"

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>

#include "common/hex.h"

namespace keel::virtio {
namespace {

bool aligned(uint64_t value, uint64_t alignment) {
  return (value & (alignment - 1)) == 0;
}

bool host_aligned(const uint8_t* p, uintptr_t alignment) {
  return (reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0;
}

// gpa + offset for ring fields: the rings were checked to lie in RAM at
// activation, so offsets inside them cannot overflow.
uint64_t at(uint64_t base, uint64_t offset) {
  return base + offset;
}

}  // namespace

void validate_split_queue_config(const GuestMemory& memory, const SplitQueueConfig& config) {
  auto refuse = [](VirtqueueErrorKind kind, const std::string& detail) {
    throw VirtqueueError(kind, detail);
  };
  // 2.7: a power of two no larger than 32768 (0 means "no queue" and is never
  // activated).
  if (config.size == 0 || config.size > kMaxQueueSize || !std::has_single_bit(config.size)) {
    refuse(VirtqueueErrorKind::kBadQueueSize, "size " + std::to_string(config.size));
  }
  // 2.7, "Virtqueue alignment": 16 for the descriptor table, 2 for the driver
  // area, 4 for the device area.
  if (!aligned(config.desc_table, kDescTableAlign)) {
    refuse(VirtqueueErrorKind::kMisalignedRing, "descriptor table at " + hex(config.desc_table));
  }
  if (!aligned(config.driver_area, kAvailAlign)) {
    refuse(VirtqueueErrorKind::kMisalignedRing, "driver area at " + hex(config.driver_area));
  }
  if (!aligned(config.device_area, kUsedAlign)) {
    refuse(VirtqueueErrorKind::kMisalignedRing, "device area at " + hex(config.device_area));
  }
  struct Part {
    const char* name;
    uint64_t gpa;
    uint64_t bytes;
  };
  for (const Part& part :
       {Part{"descriptor table", config.desc_table, desc_table_bytes(config.size)},
        Part{"driver area", config.driver_area, avail_ring_bytes(config.size)},
        Part{"device area", config.device_area, used_ring_bytes(config.size)}}) {
    if (!memory.contains(part.gpa, part.bytes)) {
      refuse(VirtqueueErrorKind::kRingOutsideMemory,
             std::string(part.name) + " " + hex(part.gpa) + "+" + hex(part.bytes));
    }
  }
  // The indices are accessed atomically, which needs them aligned in the host
  // mapping too (true whenever regions are page-aligned, as the machine makes them).
  if (!host_aligned(memory.host_range(config.driver_area, 2), 2) ||
      !host_aligned(memory.host_range(config.device_area, 4), 4)) {
    refuse(VirtqueueErrorKind::kMisalignedRing, "rings misaligned in the host mapping");
  }
}

SplitQueue::SplitQueue(GuestMemory& memory, const SplitQueueConfig& config)
    : memory_(memory), config_(config) {
  validate_split_queue_config(memory_, config_);
}

void SplitQueue::fail(VirtqueueErrorKind kind, const std::string& detail) {
  broken_ = true;
  throw VirtqueueError(kind, detail);
}

void SplitQueue::check_usable() const {
  if (broken_) throw VirtqueueError(VirtqueueErrorKind::kQueueBroken, {});
}

uint16_t SplitQueue::load_avail_idx() const {
  auto* idx = reinterpret_cast<const uint16_t*>(
      memory_.host_range(at(config_.driver_area, kAvailIdxOffset), sizeof(uint16_t)));
  // Acquire (2.7.13.3 on the driver's side): ring entries and descriptors the
  // driver wrote before moving idx are visible once we have read idx.
  return __atomic_load_n(idx, __ATOMIC_ACQUIRE);
}

std::optional<DescriptorChain> SplitQueue::pop_chain() {
  check_usable();
  const uint16_t avail_idx = load_avail_idx();
  const uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_idx_);
  const uint16_t outstanding = static_cast<uint16_t>(avail_idx - next_used_idx_);
  // A driver has at most `size` chains outstanding (each holds a head
  // descriptor until it is used); an idx beyond that, or moved backwards, is
  // garbage, and trusting it would let a guest make the device hold an
  // unbounded number of requests.
  if (pending > config_.size || outstanding > config_.size) {
    fail(VirtqueueErrorKind::kAvailIndexTooFarAhead,
         "avail idx " + std::to_string(avail_idx) + ", last seen " +
             std::to_string(last_avail_idx_) + ", used " + std::to_string(next_used_idx_));
  }
  if (pending == 0) return std::nullopt;

  const uint16_t slot = last_avail_idx_ & (config_.size - 1);
  const auto head =
      memory_.read_obj<uint16_t>(at(config_.driver_area, kAvailRingOffset + 2ull * slot));
  if (head >= config_.size) {
    fail(VirtqueueErrorKind::kHeadOutOfRange, "head " + std::to_string(head));
  }
  DescriptorChain chain;
  chain.head = head;
  walk(head, chain);

  ++last_avail_idx_;
  if (config_.event_idx) {
    // 2.7.10: tell the driver to kick for the next chain after this one.
    memory_.write_obj<uint16_t>(at(config_.device_area, avail_event_offset(config_.size)),
                                last_avail_idx_);
  }
  return chain;
}

void SplitQueue::add_segment(DescriptorChain& chain, uint64_t gpa, uint32_t len, bool writable) {
  if (chain.segments.size() >= kMaxChainSegments) {
    fail(VirtqueueErrorKind::kTooManySegments, "more than " + std::to_string(kMaxChainSegments));
  }
  if (!memory_.contains(gpa, len)) {
    fail(VirtqueueErrorKind::kBufferOutsideMemory, hex(gpa) + "+" + hex(len));
  }
  // 2.7.4.2: all device-readable buffers come before the device-writable ones.
  if (!writable && !chain.segments.empty() && chain.segments.back().writable) {
    fail(VirtqueueErrorKind::kWritableBeforeReadable, {});
  }
  const uint64_t total = uint64_t{chain.readable_bytes} + chain.writable_bytes + len;
  if (total > UINT32_MAX) fail(VirtqueueErrorKind::kChainTooLarge, hex(total) + " bytes");
  (writable ? chain.writable_bytes : chain.readable_bytes) += len;
  chain.segments.push_back({gpa, len, writable});
}

void SplitQueue::walk(uint16_t head, DescriptorChain& chain) {
  uint16_t index = head;
  // 2.7.5.3.1: a chain is at most `size` descriptors long; walking more means
  // the NEXT links loop.
  for (uint32_t walked = 0;; ++walked) {
    if (walked == config_.size) {
      fail(VirtqueueErrorKind::kChainTooLong, "head " + std::to_string(head));
    }
    // One copy of the descriptor: the guest may change it while we look.
    const auto desc = memory_.read_obj<VirtqDesc>(at(config_.desc_table, 16ull * index));
    if (desc.flags & kDescFIndirect) {
      // 2.7.5.3: zero or more direct descriptors followed by one indirect.
      walk_indirect(desc, chain);
      return;
    }
    add_segment(chain, desc.addr, desc.len, desc.flags & kDescFWrite);
    if (!(desc.flags & kDescFNext)) return;
    if (desc.next >= config_.size) {
      fail(VirtqueueErrorKind::kNextOutOfRange, "next " + std::to_string(desc.next));
    }
    index = desc.next;
  }
}

void SplitQueue::walk_indirect(const VirtqDesc& table, DescriptorChain& chain) {
  if (!config_.indirect_desc) fail(VirtqueueErrorKind::kIndirectNotNegotiated, {});
  if (table.flags & kDescFNext) fail(VirtqueueErrorKind::kIndirectWithNext, {});
  // The WRITE flag of the descriptor naming the table is ignored (2.7.5.3.2).
  if (table.len == 0 || table.len % sizeof(VirtqDesc) != 0 ||
      table.len / sizeof(VirtqDesc) > kMaxIndirectEntries) {
    fail(VirtqueueErrorKind::kBadIndirectTableLength, std::to_string(table.len) + " bytes");
  }
  if (!memory_.contains(table.addr, table.len)) {
    fail(VirtqueueErrorKind::kIndirectTableOutsideMemory, hex(table.addr) + "+" + hex(table.len));
  }
  const uint32_t entries = table.len / sizeof(VirtqDesc);
  uint32_t index = 0;  // 2.7.5.3.2: the table's chain starts at its first entry
  for (uint32_t walked = 0;; ++walked) {
    if (walked == entries) fail(VirtqueueErrorKind::kChainTooLong, "indirect table loops");
    const auto desc = memory_.read_obj<VirtqDesc>(table.addr + 16ull * index);
    if (desc.flags & kDescFIndirect) fail(VirtqueueErrorKind::kNestedIndirect, {});
    add_segment(chain, desc.addr, desc.len, desc.flags & kDescFWrite);
    if (!(desc.flags & kDescFNext)) return;
    if (desc.next >= entries) {
      fail(VirtqueueErrorKind::kNextOutOfRange, "indirect next " + std::to_string(desc.next));
    }
    index = desc.next;
  }
}

void SplitQueue::push_used(uint16_t head, uint32_t written_len) {
  check_usable();
  if (head >= config_.size) fail(VirtqueueErrorKind::kUsedHeadOutOfRange, std::to_string(head));
  if (last_avail_idx_ == next_used_idx_) fail(VirtqueueErrorKind::kNothingInFlight, {});
  const uint16_t slot = next_used_idx_ & (config_.size - 1);
  memory_.write_obj(at(config_.device_area, kUsedRingOffset + 8ull * slot),
                    VirtqUsedElem{head, written_len});
  ++next_used_idx_;
  auto* idx = reinterpret_cast<uint16_t*>(
      memory_.host_range_for_write(at(config_.device_area, kUsedIdxOffset), sizeof(uint16_t)));
  // 2.7.8 / 2.7.13: the element must be visible before the index that
  // publishes it.
  __atomic_store_n(idx, next_used_idx_, __ATOMIC_RELEASE);
}

bool SplitQueue::should_notify() {
  check_usable();
  // The used idx store must be globally visible before we read the driver's
  // suppression fields, or a driver that just re-enabled interrupts misses
  // one (store-load ordering: a full fence).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_idx = signalled_used_idx_;
  const bool was_valid = signalled_used_valid_;
  signalled_used_idx_ = next_used_idx_;
  signalled_used_valid_ = true;
  if (was_valid && old_idx == next_used_idx_) return false;  // nothing new
  if (config_.event_idx) {
    // 2.7.7.2: the driver asks for an interrupt once used idx passes used_event.
    if (!was_valid) return true;
    const auto used_event =
        memory_.read_obj<uint16_t>(at(config_.driver_area, used_event_offset(config_.size)));
    return vring_need_event(used_event, next_used_idx_, old_idx);
  }
  const auto flags = memory_.read_obj<uint16_t>(config_.driver_area);
  return !(flags & kAvailFNoInterrupt);
}

void SplitQueue::disable_notification() {
  check_usable();
  // With EVENT_IDX the driver looks only at avail_event, which stays where
  // the last pop left it: no kick until the device asks again.
  if (!config_.event_idx) memory_.write_obj<uint16_t>(config_.device_area, kUsedFNoNotify);
}

bool SplitQueue::enable_notification() {
  check_usable();
  if (config_.event_idx) {
    memory_.write_obj<uint16_t>(at(config_.device_area, avail_event_offset(config_.size)),
                                last_avail_idx_);
  } else {
    memory_.write_obj<uint16_t>(config_.device_area, 0);
  }
  // Store-load again: the driver may have added a chain before it could see
  // the write above, and then it did not kick.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return load_avail_idx() != last_avail_idx_;
}

std::optional<DescriptorChain> SplitQueue::next_chain() {
  for (;;) {
    if (auto chain = pop_chain()) return chain;
    if (!enable_notification()) return std::nullopt;
    disable_notification();
  }
}

void SplitQueue::set_state(const SplitQueueState& state) {
  check_usable();
  const uint16_t in_flight = static_cast<uint16_t>(state.last_avail_idx - state.next_used_idx);
  const uint16_t outstanding = static_cast<uint16_t>(load_avail_idx() - state.next_used_idx);
  if (in_flight > config_.size || outstanding > config_.size || in_flight > outstanding) {
    throw VirtqueueError(VirtqueueErrorKind::kBadRestoreState,
                         "last_avail " + std::to_string(state.last_avail_idx) + ", next_used " +
                             std::to_string(state.next_used_idx));
  }
  last_avail_idx_ = state.last_avail_idx;
  next_used_idx_ = state.next_used_idx;
  // Notify at the next opportunity: a spurious interrupt is harmless, a lost
  // one hangs the driver.
  signalled_used_valid_ = false;
}

}  // namespace keel::virtio
