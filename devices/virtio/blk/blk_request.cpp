#include "devices/virtio/blk/blk_request.h"

#include <algorithm>
#include <span>

namespace keel::virtio {
namespace {

uint8_t status_for(BlkRequestError error) {
  switch (error) {
    case BlkRequestError::kUnsupportedType:
    case BlkRequestError::kReservedRangeFlags:
    case BlkRequestError::kUnmapOnDiscard:
      return kBlkSUnsupp;
    default:
      return kBlkSIoErr;
  }
}

// The chain as one byte stream: readable bytes at [0, readable), writable
// ones at [readable, readable + writable).
class ChainBytes {
 public:
  ChainBytes(const DescriptorChain& chain, const GuestMemory& memory)
      : chain_(chain), memory_(memory) {}

  // Reads `out.size()` bytes at stream offset `offset`; the caller has checked
  // the range lies within the stream.
  void read(uint64_t offset, std::span<uint8_t> out) const {
    size_t done = 0;
    for (const auto& seg : chain_.segments) {
      if (done == out.size()) return;
      if (offset >= seg.len) {
        offset -= seg.len;
        continue;
      }
      const uint64_t n = std::min<uint64_t>(seg.len - offset, out.size() - done);
      memory_.read(seg.gpa + offset, out.subspan(done, n));
      done += n;
      offset = 0;
    }
  }

  // The guest buffers covering stream bytes [offset, offset + len).
  std::vector<BlkDataSegment> slice(uint64_t offset, uint64_t len) const {
    std::vector<BlkDataSegment> out;
    for (const auto& seg : chain_.segments) {
      if (len == 0) break;
      if (offset >= seg.len) {
        offset -= seg.len;
        continue;
      }
      const uint64_t n = std::min<uint64_t>(seg.len - offset, len);
      if (n > 0) out.push_back({seg.gpa + offset, static_cast<uint32_t>(n)});
      len -= n;
      offset = 0;
    }
    return out;
  }

 private:
  const DescriptorChain& chain_;
  const GuestMemory& memory_;
};

// sector + sectors within capacity, written so that nothing can overflow.
bool in_capacity(uint64_t sector, uint64_t sectors, uint64_t capacity) {
  return sector <= capacity && sectors <= capacity - sector;
}

}  // namespace

const char* to_string(BlkRequestError error) {
  switch (error) {
    case BlkRequestError::kMalformedChain:
      return "malformed descriptor chain";
    case BlkRequestError::kNoStatusByte:
      return "no writable status byte at the end";
    case BlkRequestError::kHeaderTooShort:
      return "request header shorter than 16 bytes";
    case BlkRequestError::kReadOnly:
      return "write to a read-only disk";
    case BlkRequestError::kWrongDataDirection:
      return "data buffers in the wrong direction";
    case BlkRequestError::kDataNotSectorMultiple:
      return "data not a multiple of 512 bytes";
    case BlkRequestError::kOutOfRange:
      return "sectors beyond the disk's capacity";
    case BlkRequestError::kUnexpectedData:
      return "flush with data";
    case BlkRequestError::kNoIdBuffer:
      return "get-id without a writable buffer";
    case BlkRequestError::kBadRangeList:
      return "range list empty or not a multiple of 16 bytes";
    case BlkRequestError::kTooManyRanges:
      return "too many ranges";
    case BlkRequestError::kRangeTooLarge:
      return "range larger than the device allows";
    case BlkRequestError::kTooManySegments:
      return "data in more segments than seg_max";
    case BlkRequestError::kSegmentTooLarge:
      return "data segment larger than size_max";
    case BlkRequestError::kUnsupportedType:
      return "unsupported request type";
    case BlkRequestError::kReservedRangeFlags:
      return "reserved range flags set";
    case BlkRequestError::kUnmapOnDiscard:
      return "unmap flag on a discard range";
  }
  return "unknown virtio-blk request error";
}

BlkParseResult parse_blk_request(const DescriptorChain& chain, const GuestMemory& memory,
                                 const BlkDeviceInfo& info) {
  auto reject_without_status = [](BlkRequestError error) {
    return BlkRequestRejection{error, std::nullopt, status_for(error)};
  };

  // The chain normally comes from SplitQueue, which checked all this; the
  // parser still stands on its own against any chain (the fuzzer builds some).
  uint64_t readable = 0;
  uint64_t writable = 0;
  for (size_t i = 0; i < chain.segments.size(); ++i) {
    const auto& seg = chain.segments[i];
    if (!memory.contains(seg.gpa, seg.len) ||
        (!seg.writable && i > 0 && chain.segments[i - 1].writable)) {
      return reject_without_status(BlkRequestError::kMalformedChain);
    }
    (seg.writable ? writable : readable) += seg.len;
  }
  if (readable + writable > UINT32_MAX)
    return reject_without_status(BlkRequestError::kMalformedChain);

  // 5.2.6: the status is the chain's last byte, device-writable.
  if (chain.segments.empty() || !chain.segments.back().writable || chain.segments.back().len == 0) {
    return reject_without_status(BlkRequestError::kNoStatusByte);
  }
  const auto& last = chain.segments.back();
  const uint64_t status_gpa = last.gpa + (last.len - 1);
  auto reject = [status_gpa](BlkRequestError error) {
    return BlkRequestRejection{error, status_gpa, status_for(error)};
  };

  if (readable < sizeof(BlkReqHeader)) return reject(BlkRequestError::kHeaderTooShort);
  const ChainBytes bytes(chain, memory);
  BlkReqHeader header;
  bytes.read(0, {reinterpret_cast<uint8_t*>(&header), sizeof header});

  const uint64_t data_out = readable - sizeof(BlkReqHeader);  // driver -> device
  const uint64_t data_in = writable - 1;                      // device -> driver
  BlkRequest request;
  request.status_gpa = status_gpa;

  switch (header.type) {
    case kBlkTIn:
    case kBlkTOut: {
      const bool is_read = header.type == kBlkTIn;
      // 5.2.6.2: a write to a read-only device fails with IOERR.
      if (!is_read && info.read_only) return reject(BlkRequestError::kReadOnly);
      if ((is_read ? data_out : data_in) != 0) return reject(BlkRequestError::kWrongDataDirection);
      const uint64_t len = is_read ? data_in : data_out;
      if (len % kSectorSize != 0) return reject(BlkRequestError::kDataNotSectorMultiple);
      if (!in_capacity(header.sector, len >> kSectorShift, info.capacity_sectors)) {
        return reject(BlkRequestError::kOutOfRange);
      }
      request.type = is_read ? BlkRequestType::kIn : BlkRequestType::kOut;
      request.sector = header.sector;
      request.data = bytes.slice(is_read ? readable : sizeof(BlkReqHeader), len);
      request.data_len = static_cast<uint32_t>(len);
      // What the device advertised bounds the work one request can ask for.
      if (info.seg_max != 0 && request.data.size() > info.seg_max)
        return reject(BlkRequestError::kTooManySegments);
      for (const BlkDataSegment& seg : request.data) {
        if (info.size_max != 0 && seg.len > info.size_max)
          return reject(BlkRequestError::kSegmentTooLarge);
      }
      return request;
    }
    case kBlkTFlush:
      if (data_in != 0 || data_out != 0) return reject(BlkRequestError::kUnexpectedData);
      request.type = BlkRequestType::kFlush;
      return request;
    case kBlkTGetId:
      if (data_out != 0) return reject(BlkRequestError::kWrongDataDirection);
      if (data_in == 0) return reject(BlkRequestError::kNoIdBuffer);
      request.type = BlkRequestType::kGetId;
      request.data = bytes.slice(readable, data_in);
      request.data_len = static_cast<uint32_t>(data_in);
      return request;
    case kBlkTDiscard:
    case kBlkTWriteZeroes: {
      const bool is_discard = header.type == kBlkTDiscard;
      if (!(is_discard ? info.discard : info.write_zeroes))
        return reject(BlkRequestError::kUnsupportedType);
      if (info.read_only) return reject(BlkRequestError::kReadOnly);
      if (data_in != 0) return reject(BlkRequestError::kWrongDataDirection);
      if (data_out == 0 || data_out % sizeof(BlkDiscardWriteZeroes) != 0) {
        return reject(BlkRequestError::kBadRangeList);
      }
      const uint64_t count = data_out / sizeof(BlkDiscardWriteZeroes);
      const uint32_t max_seg =
          std::min(is_discard ? info.max_discard_seg : info.max_write_zeroes_seg, kMaxBlkRanges);
      if (count > max_seg) return reject(BlkRequestError::kTooManyRanges);
      const uint32_t max_sectors =
          is_discard ? info.max_discard_sectors : info.max_write_zeroes_sectors;
      request.type = is_discard ? BlkRequestType::kDiscard : BlkRequestType::kWriteZeroes;
      request.ranges.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        BlkDiscardWriteZeroes range;
        bytes.read(sizeof(BlkReqHeader) + i * sizeof range,
                   {reinterpret_cast<uint8_t*>(&range), sizeof range});
        // 5.2.6.2: unknown flags, and unmap on a discard, are UNSUPP.
        if (range.flags & ~kBlkRangeFlagUnmap) return reject(BlkRequestError::kReservedRangeFlags);
        const bool unmap = range.flags & kBlkRangeFlagUnmap;
        if (is_discard && unmap) return reject(BlkRequestError::kUnmapOnDiscard);
        if (range.num_sectors > max_sectors) return reject(BlkRequestError::kRangeTooLarge);
        if (!in_capacity(range.sector, range.num_sectors, info.capacity_sectors)) {
          return reject(BlkRequestError::kOutOfRange);
        }
        request.ranges.push_back({range.sector, range.num_sectors, unmap});
      }
      return request;
    }
    default:
      return reject(BlkRequestError::kUnsupportedType);
  }
}

}  // namespace keel::virtio
