// libFuzzer target: the virtio-blk request parser against any chain and any
// guest memory. Checks that what it accepts is consistent: data buffers in
// RAM and adding up, sectors within the capacity, the status byte in RAM.
//
// Input: a 20-byte header, the chain's buffers, then guest memory from gpa 0.
//   u64 capacity_sectors | u8 flags | u8 segments | u8 max_discard_seg |
//   u8 max_write_zeroes_seg | u32 max_discard_sectors | u32 max_write_zeroes_sectors
// flags: 1 read-only, 2 discard, 4 write-zeroes.
// Each buffer: u32 gpa | u32 len | u8 writable (bit 0).
#include <cstddef>
#include <cstdint>

#include "devices/virtio/blk/blk_request.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
using namespace keel::virtio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  BlkDeviceInfo info;
  info.capacity_sectors = fuzz::take<uint64_t>(data, size);
  const auto flags = fuzz::take<uint8_t>(data, size);
  const auto segments = fuzz::take<uint8_t>(data, size);
  info.max_discard_seg = fuzz::take<uint8_t>(data, size);
  info.max_write_zeroes_seg = fuzz::take<uint8_t>(data, size);
  info.max_discard_sectors = fuzz::take<uint32_t>(data, size);
  info.max_write_zeroes_sectors = fuzz::take<uint32_t>(data, size);
  info.read_only = flags & 1;
  info.discard = flags & 2;
  info.write_zeroes = flags & 4;

  DescriptorChain chain;
  for (unsigned i = 0; i < segments; ++i) {
    ChainSegment seg;
    seg.gpa = fuzz::take<uint32_t>(data, size);
    seg.len = fuzz::take<uint32_t>(data, size);
    seg.writable = fuzz::take<uint8_t>(data, size) & 1;
    chain.segments.push_back(seg);
    (seg.writable ? chain.writable_bytes : chain.readable_bytes) +=
        seg.len;  // may wrap: the parser must not trust it
  }
  const GuestMemory& memory = fuzz::fill_memory(data, size);

  const BlkParseResult result = parse_blk_request(chain, memory, info);
  if (const auto* rejected = std::get_if<BlkRequestRejection>(&result)) {
    FUZZ_CHECK(rejected->status == kBlkSIoErr || rejected->status == kBlkSUnsupp);
    if (rejected->status_gpa) FUZZ_CHECK(memory.contains(*rejected->status_gpa, 1));
    return 0;
  }
  const BlkRequest& request = std::get<BlkRequest>(result);
  FUZZ_CHECK(memory.contains(request.status_gpa, 1));
  uint64_t total = 0;
  for (const auto& seg : request.data) {
    FUZZ_CHECK(seg.len > 0);
    FUZZ_CHECK(memory.contains(seg.gpa, seg.len));
    total += seg.len;
  }
  FUZZ_CHECK(total == request.data_len);
  switch (request.type) {
    case BlkRequestType::kIn:
    case BlkRequestType::kOut:
      FUZZ_CHECK(request.data_len % kSectorSize == 0);
      FUZZ_CHECK(request.sector <= info.capacity_sectors);
      FUZZ_CHECK(request.data_len / kSectorSize <= info.capacity_sectors - request.sector);
      FUZZ_CHECK(request.type == BlkRequestType::kIn || !info.read_only);
      break;
    case BlkRequestType::kDiscard:
    case BlkRequestType::kWriteZeroes:
      FUZZ_CHECK(!info.read_only);
      FUZZ_CHECK(!request.ranges.empty() && request.ranges.size() <= kMaxBlkRanges);
      for (const auto& range : request.ranges) {
        FUZZ_CHECK(range.sector <= info.capacity_sectors);
        FUZZ_CHECK(range.num_sectors <= info.capacity_sectors - range.sector);
        FUZZ_CHECK(!range.unmap || request.type == BlkRequestType::kWriteZeroes);
      }
      break;
    case BlkRequestType::kGetId:
      FUZZ_CHECK(request.data_len > 0);
      break;
    case BlkRequestType::kFlush:
      FUZZ_CHECK(request.data.empty());
      break;
  }
  return 0;
}
