// libFuzzer target: a guest that controls a split virtqueue's configuration
// and every byte of guest memory. Pops chains until none is left or the queue
// breaks, completes them in varying orders and asks whether to notify; checks
// that every chain handed out lies in guest RAM and is well-formed.
//
// Input: a 24-byte header, then guest memory from gpa 0 (first region, then
// the second at 0x20000).
//   u16 size | u8 flags | u8 completion | u32 desc | u32 driver | u32 device |
//   u16 last_avail | u16 next_used | u32 reserved
// flags: 1 EVENT_IDX, 2 INDIRECT_DESC, 4 restore last_avail/next_used,
//        8 disable notifications first.
// completion: 0 complete at once, 1 hold up to 4 then complete in reverse,
//             2 never complete.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "devices/virtio/queue/split_queue.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
using namespace keel::virtio;

namespace {

void check_chain(const GuestMemory& memory, const DescriptorChain& chain, uint16_t size) {
  FUZZ_CHECK(chain.head < size);
  FUZZ_CHECK(chain.segments.size() <= kMaxChainSegments);
  uint64_t readable = 0;
  uint64_t writable = 0;
  bool seen_writable = false;
  for (const auto& seg : chain.segments) {
    FUZZ_CHECK(memory.contains(seg.gpa, seg.len));
    FUZZ_CHECK(!seen_writable || seg.writable);
    seen_writable |= seg.writable;
    (seg.writable ? writable : readable) += seg.len;
  }
  FUZZ_CHECK(readable == chain.readable_bytes);
  FUZZ_CHECK(writable == chain.writable_bytes);
  FUZZ_CHECK(readable + writable <= UINT32_MAX);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SplitQueueConfig config;
  config.size = fuzz::take<uint16_t>(data, size);
  const auto flags = fuzz::take<uint8_t>(data, size);
  const auto completion = fuzz::take<uint8_t>(data, size);
  config.desc_table = fuzz::take<uint32_t>(data, size);
  config.driver_area = fuzz::take<uint32_t>(data, size);
  config.device_area = fuzz::take<uint32_t>(data, size);
  const SplitQueueState restored{fuzz::take<uint16_t>(data, size),
                                 fuzz::take<uint16_t>(data, size)};
  fuzz::take<uint32_t>(data, size);
  config.event_idx = flags & 1;
  config.indirect_desc = flags & 2;
  GuestMemory& memory = fuzz::fill_memory(data, size);

  try {
    SplitQueue queue(memory, config);
    if (flags & 4) {
      try {
        queue.set_state(restored);
      } catch (const VirtqueueError& e) {
        FUZZ_CHECK(e.kind() == VirtqueueErrorKind::kBadRestoreState);
        FUZZ_CHECK(!queue.broken());
      }
    }
    if (flags & 8) queue.disable_notification();
    std::vector<uint16_t> held;
    // Bounded work per input: a queue holds at most 4096 entries in this
    // memory, each chain at most 1024 buffers.
    for (int pops = 0; pops < 256; ++pops) {
      auto chain = queue.pop_chain();
      if (!chain) {
        if (!queue.enable_notification()) break;
        continue;
      }
      check_chain(memory, *chain, config.size);
      if (completion == 0) {
        queue.push_used(chain->head, chain->writable_bytes);
      } else if (completion == 1) {
        held.push_back(chain->head);
        if (held.size() == 4) {
          for (auto it = held.rbegin(); it != held.rend(); ++it) queue.push_used(*it, 1);
          held.clear();
        }
      }
      queue.should_notify();
    }
    for (uint16_t head : held) queue.push_used(head, 0);
    queue.should_notify();
  } catch (const VirtqueueError&) {
    // A refused configuration or a broken queue: the device would set
    // DEVICE_NEEDS_RESET. Anything else escaping is a bug the fuzzer reports.
  }
  return 0;
}
