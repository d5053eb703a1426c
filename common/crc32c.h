// CRC-32C (Castagnoli, the iSCSI polynomial): checksums for snapshot files,
// so a truncated or corrupted file is refused instead of restored. Uses the
// SSE4.2 instruction where the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace keel {

// `crc` continues an earlier call (0 to start).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace keel
