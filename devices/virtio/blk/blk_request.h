// Parses one virtio-blk request (virtio 1.x, 5.2.6) out of a descriptor chain.
// A pure function: it reads the header and range lists from guest memory,
// writes nothing and does no I/O. Each way a request can be wrong has its own
// BlkRequestError, with the status the device answers it with.
//
// Layout handled: the chain is one byte stream, readable bytes first. Its
// first 16 readable bytes are the header (in one descriptor or split over
// several, alone or sharing a descriptor with data); its last byte is the
// status and must sit in a writable descriptor; what lies between is the
// data, which must flow in the direction the type implies.
#pragma once

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "common/guest_memory.h"
#include "devices/virtio/blk/virtio_blk.h"
#include "devices/virtio/queue/descriptor_chain.h"

namespace keel::virtio {

// What the device offers and the driver negotiated (5.2.3, 5.2.4).
struct BlkDeviceInfo {
  uint64_t capacity_sectors = 0;
  bool read_only = false;     // VIRTIO_BLK_F_RO
  bool discard = false;       // VIRTIO_BLK_F_DISCARD negotiated
  bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES negotiated
  uint32_t max_discard_sectors = 0;
  uint32_t max_discard_seg = 1;
  uint32_t max_write_zeroes_sectors = 0;
  uint32_t max_write_zeroes_seg = 1;
  // 5.2.4: seg_max and size_max as advertised; IN/OUT data beyond them is
  // refused (0: no limit).
  uint32_t seg_max = 0;
  uint32_t size_max = 0;
};

// Ranges per DISCARD / WRITE_ZEROES request whatever the device advertises:
// bounds the parser's allocation (Linux sends at most 256).
inline constexpr uint32_t kMaxBlkRanges = 4096;

enum class BlkRequestType { kIn, kOut, kFlush, kGetId, kDiscard, kWriteZeroes };

struct BlkDataSegment {
  uint64_t gpa;
  uint32_t len;
  bool operator==(const BlkDataSegment&) const = default;
};

struct BlkRange {
  uint64_t sector;
  uint32_t num_sectors;
  bool unmap;  // write-zeroes may deallocate
  bool operator==(const BlkRange&) const = default;
};

struct BlkRequest {
  BlkRequestType type = BlkRequestType::kIn;
  uint64_t sector = 0;               // IN, OUT: first sector
  std::vector<BlkDataSegment> data;  // IN, OUT, GET_ID: the data buffers in order
  uint32_t data_len = 0;             // their total length
  std::vector<BlkRange> ranges;      // DISCARD, WRITE_ZEROES
  uint64_t status_gpa = 0;           // where the status byte goes
};

enum class BlkRequestError {
  // No status byte can be written: the device returns the chain with used
  // length 0 and nothing else.
  kMalformedChain,  // segments outside RAM, writable before readable, > 4 GiB (a chain not from
                    // SplitQueue)
  kNoStatusByte,    // last buffer not writable, or empty chain
  // Answered with VIRTIO_BLK_S_IOERR.
  kHeaderTooShort,  // fewer than 16 readable bytes
  kReadOnly,        // OUT, DISCARD, WRITE_ZEROES on a read-only disk (5.2.6.2: IOERR for writes)
  kWrongDataDirection,  // IN/GET_ID with readable data, OUT/DISCARD/WRITE_ZEROES with writable data
  kDataNotSectorMultiple,  // IN/OUT data not a multiple of 512 bytes
  kOutOfRange,             // sector + length beyond the capacity (overflow-checked)
  kUnexpectedData,         // FLUSH with data
  kNoIdBuffer,             // GET_ID without a writable buffer
  kBadRangeList,           // DISCARD/WRITE_ZEROES data empty or not a multiple of 16
  kTooManyRanges,          // more ranges than max_*_seg (or kMaxBlkRanges)
  kRangeTooLarge,          // num_sectors above max_*_sectors
  kTooManySegments,        // IN/OUT data in more than seg_max segments
  kSegmentTooLarge,        // an IN/OUT data segment above size_max bytes
  // Answered with VIRTIO_BLK_S_UNSUPP.
  kUnsupportedType,     // unknown type, or DISCARD/WRITE_ZEROES not negotiated
  kReservedRangeFlags,  // 5.2.6.2: unknown flag bits in a range
  kUnmapOnDiscard,      // 5.2.6.2: the unmap flag on a DISCARD range
};

const char* to_string(BlkRequestError error);

struct BlkRequestRejection {
  BlkRequestError error;
  std::optional<uint64_t> status_gpa;  // absent for kMalformedChain, kNoStatusByte
  uint8_t status;                      // kBlkSIoErr or kBlkSUnsupp
};

using BlkParseResult = std::variant<BlkRequest, BlkRequestRejection>;

BlkParseResult parse_blk_request(const DescriptorChain& chain, const GuestMemory& memory,
                                 const BlkDeviceInfo& info);

}  // namespace keel::virtio
