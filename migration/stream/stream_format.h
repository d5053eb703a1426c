// The live-migration stream's wire format (DESIGN.md: migration/). A stream
// opens with kStreamMagic, then carries frames: an 8-byte header (type and
// payload length, both little-endian u32) and the payload. Control frames
// carry protobuf messages (proto/migration.proto, the VmState); page
// batches are raw: entries of a u64 word (the page's index in guest memory,
// bit 63 set for a page of zeros, which carries no data) followed by the
// page's 4096 bytes unless it is zeros.
//
// Everything here decodes untrusted bytes: each length, type and index is
// checked and a violation throws StreamError naming it.
//
// The conversation (source ⇄ destination):
//   magic, Hello →            ← Verdict (the destination fits the shape, or why not)
//   Pages… (first pass, then a round per harvest of dirty pages), each
//   round ended by Sync →    ← Synced (all of it is in guest memory there)
//   Totals, State →           ← Ready (state applied, vCPUs ready) or Verdict (refused)
//   Go →                      ← Running (the guest runs on the destination)
// Cancel → at any point before Go ends the migration; the source's guest runs on.
//
// A replica stream (Hello.replica; migration/replica_sender.h) starts the
// same way, then never ends on its own:
//   Pages… (all of memory, the guest running), Sync →   ← Synced
//   DiskBlocks… (each replicated disk whole, beside the first copy)
//   per checkpoint: Pages…, DiskBlocks… (both copied in the pause), State,
//   Epoch →   ← EpochAck
//   Go (after a checkpoint taken for it: a switchover) →   ← Running
//   Cancel → the replication ends; the passive copy is dropped.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "common/error.h"

namespace keel::migration {

class StreamError : public InputError {
 public:
  explicit StreamError(const std::string& what) : InputError("migration stream: " + what) {}
};

inline constexpr std::array<uint8_t, 8> kStreamMagic = {'K', 'E', 'E', 'L', 'M', 'I', 'G', '1'};
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint64_t kPageSize = 4096;
// Above the largest frame a sender makes (a page batch of 4 MiB, a VmState
// of 255 vCPUs); a header announcing more is refused before any allocation.
inline constexpr uint32_t kMaxFramePayload = 16u << 20;

enum class FrameType : uint32_t {
  kHello = 1,
  kVerdict = 2,
  kPages = 3,
  kTotals = 4,
  kState = 5,
  kReady = 6,
  kGo = 7,
  kRunning = 8,
  kCancel = 9,
  kSync = 10,
  kSynced = 11,
  kEpoch = 12,
  kEpochAck = 13,
  kDiskBlocks = 14,
  // A replica's active still waiting for an epoch's acknowledgement: no
  // payload, nothing for the passive to do. It keeps bytes in flight, so
  // that a passive host gone is noticed by TCP within the socket's user
  // timeout rather than by the acknowledgement's own time limit.
  kKeepalive = 15,
};

struct FrameHeader {
  FrameType type;
  uint32_t length;
};

const char* frame_name(FrameType type);

// A reason the peer gave (Verdict.message), fit for one log line: at most
// 400 bytes, control characters and bytes outside printable ASCII as '?'.
std::string peer_says(const std::string& message);
std::array<uint8_t, 8> encode_frame_header(FrameType type, uint32_t length);
// Throws StreamError for an unknown type or a length above kMaxFramePayload.
FrameHeader decode_frame_header(std::span<const uint8_t, 8> bytes);

// Page batch entries.
inline constexpr uint64_t kZeroPageBit = uint64_t{1} << 63;
inline constexpr uint64_t kPageIndexMask = (uint64_t{1} << 52) - 1;
uint64_t encode_page_entry(uint64_t page, bool zero);

struct PageBatchCounts {
  uint64_t pages = 0;  // with data
  uint64_t zero_pages = 0;
};
// Calls `page(index, data)` for each entry of `payload` in order: `data`
// points at the page's 4096 bytes inside `payload`, or is null for a page
// of zeros. Every index must be below `memory_pages`; an entry cut short,
// reserved bits set or an empty batch throw StreamError (entries before the
// bad one have been delivered: the receiver throws the memory away).
PageBatchCounts decode_page_batch(std::span<const uint8_t> payload, uint64_t memory_pages,
                                  const std::function<void(uint64_t, const uint8_t*)>& page);

// Disk block frames (replica streams): a u64 naming the disk (its index in
// the configuration), then entries as a page batch's, each a 4 KiB block
// of that disk. Throws StreamError for a payload shorter than the u64 or a
// disk index not below `disks`.
struct DiskBlocks {
  uint32_t disk;
  std::span<const uint8_t> batch;  // decode_page_batch, with the disk's blocks
};
DiskBlocks split_disk_blocks(std::span<const uint8_t> payload, size_t disks);

}  // namespace keel::migration
