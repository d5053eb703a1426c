// virtio-blk wire format (virtio 1.x, 5.2): request types, status values,
// the request header and the discard / write-zeroes range. Little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace keel::virtio {

inline constexpr uint64_t kSectorSize = 512;
inline constexpr unsigned kSectorShift = 9;

// 5.2.6: request types.
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint32_t kBlkTGetId = 8;
inline constexpr uint32_t kBlkTDiscard = 11;
inline constexpr uint32_t kBlkTWriteZeroes = 13;

// 5.2.6: the status byte the device writes last.
inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint8_t kBlkSIoErr = 1;
inline constexpr uint8_t kBlkSUnsupp = 2;

// 5.2.6: GET_ID answers with a serial of up to 20 bytes, NUL-padded.
inline constexpr uint32_t kBlkIdBytes = 20;

// 5.2.6: what the driver puts first in every request.
struct BlkReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(BlkReqHeader) == 16);

// 5.2.6: the data of DISCARD and WRITE_ZEROES: one or more of these.
struct BlkDiscardWriteZeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(BlkDiscardWriteZeroes) == 16);
inline constexpr uint32_t kBlkRangeFlagUnmap = 1;  // write-zeroes only: may deallocate

// 5.2.3: device feature bits.
inline constexpr uint64_t kBlkFSizeMax = uint64_t{1} << 1;
inline constexpr uint64_t kBlkFSegMax = uint64_t{1} << 2;
inline constexpr uint64_t kBlkFGeometry = uint64_t{1} << 4;
inline constexpr uint64_t kBlkFRo = uint64_t{1} << 5;
inline constexpr uint64_t kBlkFBlkSize = uint64_t{1} << 6;
inline constexpr uint64_t kBlkFFlush = uint64_t{1} << 9;
inline constexpr uint64_t kBlkFTopology = uint64_t{1} << 10;
inline constexpr uint64_t kBlkFConfigWce = uint64_t{1} << 11;
inline constexpr uint64_t kBlkFMq = uint64_t{1} << 12;
inline constexpr uint64_t kBlkFDiscard = uint64_t{1} << 13;
inline constexpr uint64_t kBlkFWriteZeroes = uint64_t{1} << 14;

// 5.2.4: the device configuration layout, up to write_zeroes_may_unmap and
// its padding (secure erase, not offered, follows).
struct BlkConfig {
  uint64_t capacity;  // in 512-byte sectors, whatever blk_size says
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t geometry_cylinders;
  uint8_t geometry_heads;
  uint8_t geometry_sectors;
  uint32_t blk_size;
  uint8_t physical_block_exp;  // topology: log2(physical / logical block)
  uint8_t alignment_offset;
  uint16_t min_io_size;  // in logical blocks
  uint32_t opt_io_size;  // in logical blocks
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
};
inline constexpr uint32_t kBlkConfigSize = 60;
static_assert(offsetof(BlkConfig, blk_size) == 20);
static_assert(offsetof(BlkConfig, physical_block_exp) == 24);
static_assert(offsetof(BlkConfig, writeback) == 32);
static_assert(offsetof(BlkConfig, max_discard_sectors) == 36);
static_assert(offsetof(BlkConfig, max_write_zeroes_sectors) == 48);
static_assert(offsetof(BlkConfig, write_zeroes_may_unmap) == 56);
static_assert(offsetof(BlkConfig, unused1) + 3 == kBlkConfigSize);

}  // namespace keel::virtio
