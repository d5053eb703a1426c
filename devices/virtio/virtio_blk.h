// virtio-blk wire format (virtio 1.x, 5.2): request types, status values,
// the request header and the discard / write-zeroes range. Little-endian.
#pragma once

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

}  // namespace keel::virtio
