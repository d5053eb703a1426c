// virtio-net wire format (virtio 1.x, 5.1): feature bits, the configuration
// layout and the header in front of every packet. Little-endian.
#pragma once

#include <cstdint>

namespace keel::virtio {

// 5.1.3: feature bits (the ones Keel knows; see VirtioNetDevice for those it offers).
inline constexpr uint64_t kNetFCsum = uint64_t{1} << 0;  // device takes partially checksummed tx
inline constexpr uint64_t kNetFGuestCsum = uint64_t{1}
                                           << 1;  // driver takes partially checksummed rx
inline constexpr uint64_t kNetFMtu = uint64_t{1} << 3;
inline constexpr uint64_t kNetFMac = uint64_t{1} << 5;
inline constexpr uint64_t kNetFGuestTso4 = uint64_t{1} << 7;
inline constexpr uint64_t kNetFGuestTso6 = uint64_t{1} << 8;
inline constexpr uint64_t kNetFGuestEcn = uint64_t{1} << 9;
inline constexpr uint64_t kNetFGuestUfo = uint64_t{1} << 10;
inline constexpr uint64_t kNetFHostTso4 = uint64_t{1} << 11;
inline constexpr uint64_t kNetFHostTso6 = uint64_t{1} << 12;
inline constexpr uint64_t kNetFHostEcn = uint64_t{1} << 13;
inline constexpr uint64_t kNetFHostUfo = uint64_t{1} << 14;
inline constexpr uint64_t kNetFMrgRxbuf = uint64_t{1} << 15;
inline constexpr uint64_t kNetFStatus = uint64_t{1} << 16;
inline constexpr uint64_t kNetFCtrlVq = uint64_t{1} << 17;
inline constexpr uint64_t kNetFMq = uint64_t{1} << 22;

// 5.1.4: status field bits.
inline constexpr uint16_t kNetSLinkUp = 1;

// 5.1.4: the configuration layout up to max_virtqueue_pairs.
inline constexpr uint32_t kNetConfigMac = 0;
inline constexpr uint32_t kNetConfigStatus = 6;
inline constexpr uint32_t kNetConfigMaxVirtqueuePairs = 8;
inline constexpr uint32_t kNetConfigSize = 10;

// 5.1.2: queue numbers with one queue pair and no control queue.
inline constexpr uint16_t kNetRxQueue = 0;
inline constexpr uint16_t kNetTxQueue = 1;

// 5.1.6: the header before every packet, in both directions. With
// VIRTIO_F_VERSION_1 it always has num_buffers (12 bytes), whether or not
// MRG_RXBUF was negotiated.
struct VirtioNetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(VirtioNetHdr) == 12);
inline constexpr uint32_t kNetHdrSize = sizeof(VirtioNetHdr);
inline constexpr uint32_t kNetHdrNumBuffersOffset = 10;

inline constexpr uint8_t kNetHdrFNeedsCsum = 1;
inline constexpr uint8_t kNetHdrGsoNone = 0;
inline constexpr uint8_t kNetHdrGsoTcpV4 = 1;
inline constexpr uint8_t kNetHdrGsoTcpV6 = 4;

}  // namespace keel::virtio
