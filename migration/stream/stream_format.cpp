#include "migration/stream/stream_format.h"

#include "common/little_endian.h"

namespace keel::migration {

const char* frame_name(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "hello";
    case FrameType::kVerdict:
      return "verdict";
    case FrameType::kPages:
      return "pages";
    case FrameType::kTotals:
      return "totals";
    case FrameType::kState:
      return "state";
    case FrameType::kReady:
      return "ready";
    case FrameType::kGo:
      return "go";
    case FrameType::kRunning:
      return "running";
    case FrameType::kCancel:
      return "cancel";
    case FrameType::kSync:
      return "sync";
    case FrameType::kSynced:
      return "synced";
    case FrameType::kEpoch:
      return "epoch";
    case FrameType::kEpochAck:
      return "epoch ack";
    case FrameType::kDiskBlocks:
      return "disk blocks";
    case FrameType::kKeepalive:
      return "keepalive";
  }
  return "unknown";
}

std::array<uint8_t, 8> encode_frame_header(FrameType type, uint32_t length) {
  std::array<uint8_t, 8> out{};
  store_le(std::span<uint8_t>(out.data(), 4), static_cast<uint32_t>(type));
  store_le(std::span<uint8_t>(out.data() + 4, 4), length);
  return out;
}

FrameHeader decode_frame_header(std::span<const uint8_t, 8> bytes) {
  const auto type = static_cast<uint32_t>(load_le(bytes.subspan(0, 4)));
  const auto length = static_cast<uint32_t>(load_le(bytes.subspan(4, 4)));
  if (type < static_cast<uint32_t>(FrameType::kHello) ||
      type > static_cast<uint32_t>(FrameType::kKeepalive)) {
    throw StreamError("unknown frame type " + std::to_string(type));
  }
  if (length > kMaxFramePayload) {
    throw StreamError(std::string(frame_name(static_cast<FrameType>(type))) + " frame of " +
                      std::to_string(length) + " bytes (at most " +
                      std::to_string(kMaxFramePayload) + ")");
  }
  return {static_cast<FrameType>(type), length};
}

uint64_t encode_page_entry(uint64_t page, bool zero) {
  return (page & kPageIndexMask) | (zero ? kZeroPageBit : 0);
}

PageBatchCounts decode_page_batch(std::span<const uint8_t> payload, uint64_t memory_pages,
                                  const std::function<void(uint64_t, const uint8_t*)>& page) {
  if (payload.empty()) throw StreamError("empty page batch");
  PageBatchCounts counts;
  size_t at = 0;
  while (at < payload.size()) {
    if (payload.size() - at < 8) {
      throw StreamError("page entry cut short at byte " + std::to_string(at) + " of the batch");
    }
    const uint64_t word = load_le(payload.subspan(at, 8));
    at += 8;
    const uint64_t index = word & kPageIndexMask;
    const bool zero = (word & kZeroPageBit) != 0;
    if ((word & ~(kPageIndexMask | kZeroPageBit)) != 0) {
      throw StreamError("page entry with reserved bits set (" + std::to_string(word) + ")");
    }
    if (index >= memory_pages) {
      throw StreamError("page " + std::to_string(index) + " beyond guest memory (" +
                        std::to_string(memory_pages) + " pages)");
    }
    if (zero) {
      page(index, nullptr);
      ++counts.zero_pages;
      continue;
    }
    if (payload.size() - at < kPageSize) {
      throw StreamError("page " + std::to_string(index) +
                        " cut short: " + std::to_string(payload.size() - at) + " of 4096 bytes");
    }
    page(index, payload.data() + at);
    at += kPageSize;
    ++counts.pages;
  }
  return counts;
}

std::string peer_says(const std::string& message) {
  constexpr size_t kMax = 400;
  std::string out = message.substr(0, kMax);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  if (message.size() > kMax) out += "...";
  return out;
}

DiskBlocks split_disk_blocks(std::span<const uint8_t> payload, size_t disks) {
  if (payload.size() < 8) throw StreamError("disk blocks frame without its disk");
  const uint64_t disk = load_le(payload.subspan(0, 8));
  if (disk >= disks) {
    throw StreamError("disk blocks for disk " + std::to_string(disk) + " of " +
                      std::to_string(disks));
  }
  return {static_cast<uint32_t>(disk), payload.subspan(8)};
}

}  // namespace keel::migration
