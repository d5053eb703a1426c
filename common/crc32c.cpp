#include "common/crc32c.h"

#include <array>
#include <cstring>

namespace keel {

namespace {

constexpr uint32_t kPolynomial = 0x82f63b78;  // reflected 0x1EDC6F41

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr auto kTable = make_table();

uint32_t crc32c_table(const uint8_t* p, size_t size, uint32_t crc) {
  for (size_t i = 0; i < size; ++i) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t size,
                                                        uint32_t crc) {
  uint64_t c = crc;
  for (; size >= 8; p += 8, size -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; size > 0; ++p, --size) c32 = __builtin_ia32_crc32qi(c32, *p);
  return c32;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  crc = hardware ? crc32c_sse42(p, size, crc) : crc32c_table(p, size, crc);
  return ~crc;
}

}  // namespace keel
